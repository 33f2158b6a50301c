/*
 * The combining write queue of a persistent backend: ops from any number
 * of threads are queued under one lock, and the first thread that finds
 * nobody leading runs everything queued so far as one batch (one
 * transaction), so writes that arrive while a batch runs share the next
 * one and nobody waits on a dedicated writer thread's wake-up. It owns
 * only the queue and the lead; what a batch does is the backend's, and it
 * never runs a batch while holding the lock.
 */
#include "storage/persist/persist.h"

#include <stddef.h>

bool
persist_queue_init(struct persist_queue *q, persist_batch_fn run, void *arg)
{
    q->run = run;
    q->arg = arg;
    q->head = NULL;
    q->tail = NULL;
    q->busy = false;
    q->excl_want = 0;
    if (pthread_mutex_init(&q->lock, NULL) != 0) {
        return false;
    }
    if (pthread_cond_init(&q->excl_cond, NULL) != 0) {
        pthread_mutex_destroy(&q->lock);
        return false;
    }
    return true;
}

void
persist_queue_deinit(struct persist_queue *q)
{
    pthread_cond_destroy(&q->excl_cond);
    pthread_mutex_destroy(&q->lock);
}

/* Hands the lead on; lock held. */
static void
pass_lead(struct persist_queue *q)
{
    q->busy = false;
    if (q->excl_want > 0) {
        pthread_cond_signal(&q->excl_cond);
    } else if (q->head != NULL) {
        /* The oldest waiter leads the next batch. */
        pthread_cond_signal(q->head->cond);
    }
}

void
persist_queue_submit(struct persist_queue *q, struct persist_qnode *n,
                     pthread_cond_t *cond)
{
    n->next = NULL;
    persist_queue_submit_chain(q, n, n, cond);
}

void
persist_queue_submit_chain(struct persist_queue *q,
                           struct persist_qnode *first,
                           struct persist_qnode *last,
                           pthread_cond_t *cond)
{
    /* The leader takes all that is queued, so the chain is never split:
     * the last node done means every one is. */
    struct persist_qnode *n = last;

    for (struct persist_qnode *o = first; o != NULL; o = o->next) {
        o->cond = cond;
        o->done = false;
        if (o == last) {
            break;
        }
    }
    last->next = NULL;
    pthread_mutex_lock(&q->lock);
    if (q->tail != NULL) {
        q->tail->next = first;
    } else {
        q->head = first;
    }
    q->tail = last;
    while (!n->done) {
        struct persist_qnode *batch;

        if (q->busy || q->excl_want > 0 || q->head == NULL) {
            pthread_cond_wait(cond, &q->lock);
            continue;
        }
        /* Lead: everything queued so far goes into one transaction. */
        batch = q->head;
        q->head = NULL;
        q->tail = NULL;
        q->busy = true;
        pthread_mutex_unlock(&q->lock);
        q->run(q->arg, batch);
        pthread_mutex_lock(&q->lock);
        for (struct persist_qnode *o = batch, *next; o != NULL; o = next) {
            pthread_cond_t *oc = o->cond;

            next = o->next;
            o->done = true;   /* o may be gone once the lock is released */
            if (oc != cond) {
                pthread_cond_signal(oc);
            }
        }
        pass_lead(q);
    }
    pthread_mutex_unlock(&q->lock);
}

void
persist_queue_exclusive(struct persist_queue *q, void (*fn)(void *),
                        void *arg)
{
    pthread_mutex_lock(&q->lock);
    q->excl_want++;
    while (q->busy) {
        pthread_cond_wait(&q->excl_cond, &q->lock);
    }
    q->excl_want--;
    q->busy = true;
    pthread_mutex_unlock(&q->lock);
    fn(arg);
    pthread_mutex_lock(&q->lock);
    pass_lead(q);
    pthread_mutex_unlock(&q->lock);
}
