/*
 * Crash images for the power-loss rig (see powerloss_img.h). It reads the
 * log only and writes only the image directories it is given.
 */
#include "tests/powerloss_img.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

uint64_t
pl_rng_next(struct pl_rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint64_t
pl_rng_below(struct pl_rng *r, uint64_t n)
{
    return pl_rng_next(r) % n;
}

double
pl_rng_unit(struct pl_rng *r)
{
    return (double)(pl_rng_next(r) >> 11) / 9007199254740992.0;
}

/* Appends v to a growable array of T; false when out of memory. */
#define PUSH(arr, n, cap, v)                                              \
    (((n) < (cap) || grow((void **)&(arr), &(cap), sizeof(*(arr)))) &&    \
     ((arr)[(n)++] = (v), true))

static bool
grow(void **arr, size_t *cap, size_t elem)
{
    size_t ncap = *cap != 0 ? *cap * 2 : 64;
    void *p = realloc(*arr, ncap * elem);

    if (p == NULL) {
        return false;
    }
    *arr = p;
    *cap = ncap;
    return true;
}

static int
by_in_cmp(const void *a, const void *b)
{
    const struct pl_barrier *x = a;
    const struct pl_barrier *y = b;

    return x->in < y->in ? -1 : x->in > y->in ? 1 : 0;
}

/* Derives by_in, in_max and out_min once by_out is complete. */
static bool
index_barriers(struct pl_mfile *mf)
{
    size_t n = mf->nbar;

    if (n == 0) {
        return true;
    }
    mf->in_max = malloc(n * sizeof(*mf->in_max));
    mf->by_in = malloc(n * sizeof(*mf->by_in));
    mf->out_min = malloc(n * sizeof(*mf->out_min));
    if (mf->in_max == NULL || mf->by_in == NULL || mf->out_min == NULL) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        uint64_t in = mf->by_out[i].in;

        mf->in_max[i] = i > 0 && mf->in_max[i - 1] > in ? mf->in_max[i - 1]
                                                         : in;
    }
    memcpy(mf->by_in, mf->by_out, n * sizeof(*mf->by_in));
    qsort(mf->by_in, n, sizeof(*mf->by_in), by_in_cmp);
    for (size_t i = n; i-- > 0;) {
        uint64_t out = mf->by_in[i].out;

        mf->out_min[i] = i + 1 < n && mf->out_min[i + 1] < out
                         ? mf->out_min[i + 1] : out;
    }
    return true;
}

bool
pl_model_init(struct pl_model *m, const struct pl_log *log, uint64_t nrec)
{
    size_t opcap[PL_MAXFILES] = { 0 };
    size_t barcap[PL_MAXFILES] = { 0 };
    size_t anycap = 0;

    memset(m, 0, sizeof(*m));
    m->log = log;
    m->nrec = nrec;
    m->nfiles = log->nfiles;
    for (uint64_t i = 0; i < nrec; i++) {
        const struct pl_rec *r = &log->rec[i];
        struct pl_mfile *mf = &m->f[r->file];

        switch (r->kind) {
        case PL_WRITE:
        case PL_TRUNC:
        case PL_UNLINK:
        case PL_CREATE:
            if (!PUSH(mf->ops, mf->nops, opcap[r->file], i)) {
                return false;
            }
            break;
        case PL_SYNC_OUT:
            if ((r->flags & PL_F_FAILED) == 0) {
                struct pl_barrier b = { r->off, i };

                if (!PUSH(mf->by_out, mf->nbar, barcap[r->file], b) ||
                    !PUSH(m->any.by_out, m->any.nbar, anycap, b)) {
                    return false;
                }
            }
            break;
        default:
            break;
        }
    }
    for (uint32_t f = 0; f < m->nfiles; f++) {
        if (!index_barriers(&m->f[f])) {
            return false;
        }
    }
    return index_barriers(&m->any);
}

static void
mfile_free(struct pl_mfile *mf)
{
    free(mf->ops);
    free(mf->by_out);
    free(mf->in_max);
    free(mf->by_in);
    free(mf->out_min);
    memset(mf, 0, sizeof(*mf));
}

void
pl_model_deinit(struct pl_model *m)
{
    for (uint32_t f = 0; f < PL_MAXFILES; f++) {
        mfile_free(&m->f[f]);
    }
    mfile_free(&m->any);
}

uint64_t
pl_model_horizon(const struct pl_model *m, uint32_t f, uint64_t p)
{
    const struct pl_mfile *mf = &m->f[f];
    size_t lo = 0;
    size_t hi = mf->nbar;

    /* How many barriers returned before p (out < p). */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (mf->by_out[mid].out < p) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo > 0 ? mf->in_max[lo - 1] : 0;
}

uint64_t
pl_model_covered_from(const struct pl_model *m, uint32_t f, uint64_t after)
{
    const struct pl_mfile *mf = f < PL_MAXFILES ? &m->f[f] : &m->any;
    size_t lo = 0;
    size_t hi = mf->nbar;

    /* The first barrier entered after `after`. */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (mf->by_in[mid].in <= after) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo < mf->nbar ? mf->out_min[lo] + 1 : PL_NEVER;
}

void
pl_dir_init(struct pl_dir *d)
{
    memset(d, 0, sizeof(*d));
}

void
pl_dir_deinit(struct pl_dir *d)
{
    for (uint32_t f = 0; f < PL_MAXFILES; f++) {
        if (d->f[f].p != NULL) {
            munmap(d->f[f].p, d->f[f].cap);
        }
    }
    memset(d, 0, sizeof(*d));
}

/*
 * A file buffer is one big lazily backed mapping that forked checkers do
 * not inherit: the parent rewrites it for every image while the checker of
 * the previous image runs, and with copy-on-write sharing each page
 * written would fault and flush TLBs (most of the rig's time, measured).
 */
#define PL_BUF_VMAX (1ull << 30)

static bool
buf_reserve(struct pl_buf *b, size_t n)
{
    void *p;

    if (n > PL_BUF_VMAX) {
        return false;
    }
    if (b->p != NULL) {
        return true;
    }
    p = mmap(NULL, PL_BUF_VMAX, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
        return false;
    }
    (void)madvise(p, PL_BUF_VMAX, MADV_DONTFORK);
    b->p = p;
    b->cap = PL_BUF_VMAX;
    return true;
}

/* Sets the length, zero-filling what a growth exposes (a hole). */
static bool
buf_resize(struct pl_buf *b, size_t len)
{
    if (len > b->len) {
        if (!buf_reserve(b, len)) {
            return false;
        }
        memset(b->p + b->len, 0, len - b->len);
    }
    b->len = len;
    return true;
}

static bool
buf_put(struct pl_buf *b, uint64_t off, const uint8_t *src, size_t len)
{
    if (off + len > b->len && !buf_resize(b, (size_t)(off + len))) {
        return false;
    }
    memcpy(b->p + off, src, len);
    b->exists = true;
    return true;
}

static bool
buf_copy(struct pl_buf *dst, const struct pl_buf *src)
{
    if (!buf_reserve(dst, src->len)) {
        return false;
    }
    if (src->len > 0) {
        memcpy(dst->p, src->p, src->len);
    }
    dst->len = src->len;
    dst->exists = src->exists;
    return true;
}

/* Applies record r to b whole. */
static bool
apply(const struct pl_model *m, struct pl_buf *b, const struct pl_rec *r)
{
    switch (r->kind) {
    case PL_CREATE:
        b->exists = true;
        return true;
    case PL_UNLINK:
        b->len = 0;
        b->exists = false;
        return true;
    case PL_TRUNC:
        b->exists = true;
        return buf_resize(b, (size_t)r->off);
    case PL_WRITE:
        return buf_put(b, r->off, m->log->data + r->data, r->len);
    default:
        return true;
    }
}

/* Applies a random subset of the 512-byte sectors a write touches. */
static bool
apply_torn(const struct pl_model *m, struct pl_buf *b,
           const struct pl_rec *r, struct pl_rng *rng)
{
    uint64_t end = r->off + r->len;
    const uint8_t *src = m->log->data + r->data;

    for (uint64_t s = r->off / PL_SECTOR * PL_SECTOR; s < end;
         s += PL_SECTOR) {
        uint64_t lo = s > r->off ? s : r->off;
        uint64_t hi = s + PL_SECTOR < end ? s + PL_SECTOR : end;

        if ((pl_rng_next(rng) & 1) != 0 &&
            !buf_put(b, lo, src + (lo - r->off), (size_t)(hi - lo))) {
            return false;
        }
    }
    return true;
}

/* Moves base's file f forward: every op below upto applied. */
static bool
advance(const struct pl_model *m, struct pl_dir *base, uint32_t f,
        uint64_t upto)
{
    const struct pl_mfile *mf = &m->f[f];

    while (base->next[f] < mf->nops && mf->ops[base->next[f]] < upto) {
        if (!apply(m, &base->f[f], &m->log->rec[mf->ops[base->next[f]]])) {
            return false;
        }
        base->next[f]++;
    }
    if (upto > base->upto[f]) {
        base->upto[f] = upto;
    }
    return true;
}

bool
pl_image(const struct pl_model *m, struct pl_dir *base, uint64_t p,
         bool kill9, const struct pl_fate *fate, struct pl_rng *rng,
         struct pl_dir *out, struct pl_imgstat *st)
{
    uint64_t cut = p;
    uint64_t low = p;
    uint8_t *fate_of = st->fate_of;

    memset(st, 0, sizeof(*st));
    st->fate_of = fate_of;
    if (fate_of != NULL) {
        memset(fate_of, PL_FATE_NONE, m->nrec);
    }
    for (uint32_t f = 0; f < m->nfiles; f++) {
        uint64_t h = kill9 ? p : pl_model_horizon(m, f, p);

        if (!advance(m, base, f, h)) {
            return false;
        }
        if (base->upto[f] < low) {
            low = base->upto[f];
        }
    }
    if (!kill9 && fate->order != PL_ORDER_NONE && p > low) {
        /* The disk wrote back in (or against) log order up to cut. */
        cut = low + pl_rng_below(rng, p - low + 1);
    }
    for (uint32_t f = 0; f < m->nfiles; f++) {
        const struct pl_mfile *mf = &m->f[f];
        struct pl_buf *b = &out->f[f];

        if (!buf_copy(b, &base->f[f])) {
            return false;
        }
        if (fate_of != NULL) {
            for (size_t i = 0; i < base->next[f]; i++) {
                fate_of[mf->ops[i]] = PL_FATE_DURABLE;
            }
        }
        for (size_t i = base->next[f]; i < mf->nops && mf->ops[i] < p; i++) {
            const struct pl_rec *r = &m->log->rec[mf->ops[i]];
            pl_fate_e what;
            bool ok;

            if (r->kind == PL_CREATE || r->kind == PL_UNLINK ||
                (r->kind == PL_WRITE && (r->flags & PL_F_DURABLE) != 0)) {
                what = PL_FATE_DURABLE;
            } else if (fate->order != PL_ORDER_NONE) {
                bool before = mf->ops[i] < cut;

                what = mf->ops[i] == cut && r->kind == PL_WRITE
                       ? PL_FATE_TORN
                       : before == (fate->order == PL_ORDER_PREFIX)
                       ? PL_FATE_KEPT : PL_FATE_DROPPED;
            } else {
                double u = pl_rng_unit(rng);

                what = u < fate->keep ? PL_FATE_KEPT
                       : u < fate->keep + fate->torn && r->kind == PL_WRITE
                       ? PL_FATE_TORN : PL_FATE_DROPPED;
            }
            switch (what) {
            case PL_FATE_KEPT:
                st->kept++;
                /* fall through */
            case PL_FATE_DURABLE:
                ok = apply(m, b, r);
                break;
            case PL_FATE_TORN:
                st->torn++;
                ok = apply_torn(m, b, r, rng);
                break;
            default:
                st->dropped++;
                ok = true;
                break;
            }
            st->pending += what != PL_FATE_DURABLE;
            if (fate_of != NULL) {
                fate_of[mf->ops[i]] = (uint8_t)what;
            }
            if (!ok) {
                return false;
            }
        }
    }
    return true;
}

bool
pl_dump(const struct pl_model *m, uint64_t p, const uint8_t *fate_of,
        const char *path)
{
    static const char *const kinds[] = {
        "?", "write", "trunc", "sync-in", "sync-out", "unlink", "create",
        "issue", "ack",
    };
    static const char *const fates[] = {
        "", "durable", "kept", "TORN", "DROPPED",
    };
    FILE *f = fopen(path, "w");

    if (f == NULL) {
        return false;
    }
    fprintf(f, "# record kind thread file offset length fate "
            "(issue/ack: op key version rc); crash point %" PRIu64 "\n", p);
    for (uint64_t i = 0; i < p && i < m->nrec; i++) {
        const struct pl_rec *r = &m->log->rec[i];
        const char *kind = r->kind < sizeof(kinds) / sizeof(kinds[0])
                           ? kinds[r->kind] : "?";

        if (r->kind == PL_ISSUE || r->kind == PL_ACK) {
            fprintf(f, "%" PRIu64 " %s t%u op%u key%" PRIu64 " v%u rc%" PRIu64
                    "\n", i, kind, r->thr, r->file, r->off, r->len, r->data);
        } else {
            fprintf(f, "%" PRIu64 " %s t%u %s %" PRIu64 " %u %s\n", i, kind,
                    r->thr, m->log->files[r->file], r->off, r->len,
                    fate_of != NULL && fate_of[i] < 5 ? fates[fate_of[i]]
                                                      : "");
        }
    }
    return fclose(f) == 0;
}

bool
pl_dir_write(const struct pl_model *m, const struct pl_dir *d,
             const char *dir)
{
    char path[4096];

    for (uint32_t f = 0; f < m->nfiles; f++) {
        const struct pl_buf *b = &d->f[f];
        size_t done = 0;
        int fd;

        if (!b->exists) {
            continue;
        }
        snprintf(path, sizeof(path), "%s/%s", dir, m->log->files[f]);
        fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
        if (fd < 0) {
            return false;
        }
        while (done < b->len) {
            ssize_t n = write(fd, b->p + done, b->len - done);

            if (n <= 0) {
                close(fd);
                return false;
            }
            done += (size_t)n;
        }
        close(fd);
    }
    return true;
}
