/* For tests/tests/clock.rs: shifts CLOCK_REALTIME as one process sees it,
 * by the nanoseconds written in the file $OBSERVER_TEST_CLOCK_SHIFT (read
 * at most every 20 ms), so a test can step the agent's wall clock without
 * touching the machine's. Loaded with LD_PRELOAD. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef int (*clock_gettime_fn)(clockid_t, struct timespec *);

static long long shift_ns;
static long long next_read_ns;

static long long ns_of(const struct timespec *ts) { return ts->tv_sec * 1000000000LL + ts->tv_nsec; }

int clock_gettime(clockid_t id, struct timespec *ts) {
    static clock_gettime_fn real;
    if (!real) real = (clock_gettime_fn)dlsym(RTLD_NEXT, "clock_gettime");
    int r = real(id, ts);
    if (r != 0 || id != CLOCK_REALTIME) return r;
    struct timespec mono;
    real(CLOCK_MONOTONIC, &mono);
    if (ns_of(&mono) >= __atomic_load_n(&next_read_ns, __ATOMIC_RELAXED)) {
        __atomic_store_n(&next_read_ns, ns_of(&mono) + 20000000LL, __ATOMIC_RELAXED);
        const char *path = getenv("OBSERVER_TEST_CLOCK_SHIFT");
        FILE *f = path ? fopen(path, "r") : NULL;
        long long v;
        if (f) {
            if (fscanf(f, "%lld", &v) == 1) __atomic_store_n(&shift_ns, v, __ATOMIC_RELAXED);
            fclose(f);
        }
    }
    long long t = ns_of(ts) + __atomic_load_n(&shift_ns, __ATOMIC_RELAXED);
    ts->tv_sec = t / 1000000000LL;
    ts->tv_nsec = t % 1000000000LL;
    return 0;
}
