#ifndef FEDGATE_SYSTEM_H
#define FEDGATE_SYSTEM_H

#if defined(__linux__)
#include <malloc.h>
#endif

/// glibc's malloc raises its mmap threshold each time a large block is freed (up to 32 MiB), after
/// which model-sized arrays (a few MB each round) come from the heap and are trimmed back and
/// faulted in again round after round. A fixed threshold of 4 MiB keeps transfer chunks (1 MiB) in
/// the heap and maps model-sized arrays directly. Returns 1 when applied, 0 where it does not apply.
static inline int fedgate_tune_allocator(void) {
#if defined(M_MMAP_THRESHOLD) && defined(M_TRIM_THRESHOLD)
    return mallopt(M_MMAP_THRESHOLD, 4 * 1024 * 1024) && mallopt(M_TRIM_THRESHOLD, 32 * 1024 * 1024);
#else
    return 0;
#endif
}

/// Gives the heap's free pages back to the system (glibc's malloc_trim walks every arena): freed
/// transfer chunks otherwise stay resident in the arenas that served them. Returns 1 when memory
/// was released, 0 otherwise or where it does not apply.
static inline int fedgate_release_free_memory(void) {
#if defined(__GLIBC__)
    return malloc_trim(0);
#else
    return 0;
#endif
}

#include <sys/types.h>

/// Starts `path` with `argv` and `envp` only, stdin from /dev/null and stdout and stderr appended to
/// the file `output`, in `directory` (NULL: this one), as the leader of a new process group when
/// `new_group` is non-zero, with every descriptor above 2 closed in the child. posix_spawn directly:
/// Foundation's Process.run on Linux (swift-corelibs-foundation before PR #5472) over-reads
/// /proc/self/fd entries and crashes a process now and then. Returns 0 or an errno value.
int fedgate_spawn(pid_t *pid, const char *path, char *const argv[], char *const envp[], const char *directory,
                  const char *output, int new_group);

#endif
