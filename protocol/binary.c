/* placeholder until the module lands */ typedef int stashd_placeholder_binary;
