/* SD-card realism for the gateway benchmark: an LD_PRELOAD shim that makes every
 * fsync() and fdatasync() of the process take at least FSYNC_DELAY_MS milliseconds
 * more (an SD card's flush takes 5-20 ms; this machine's disk about 0.05 ms).
 * The real call is made first, so durability is unchanged; the sleep is wall time,
 * not CPU, as on a card. bench/gateway_bench.py builds it with gcc at run time:
 *   gcc -shared -fPIC -O2 -o fsync_delay.so fsync_delay.c -ldl
 *   LD_PRELOAD=./fsync_delay.so FSYNC_DELAY_MS=20 citynode gateway ...
 * SQLite (os_unix.c) calls fdatasync() for the WAL and fsync() for directories.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static long delay_ns = -1;

static void card_delay(void) {
    if (delay_ns < 0) {
        const char *s = getenv("FSYNC_DELAY_MS");
        delay_ns = s ? (long)(atof(s) * 1e6) : 0;
    }
    if (delay_ns > 0) {
        struct timespec ts = {delay_ns / 1000000000L, delay_ns % 1000000000L};
        while (nanosleep(&ts, &ts) != 0) {
        }
    }
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real)
        real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    int rc = real(fd);
    card_delay();
    return rc;
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real)
        real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    int rc = real(fd);
    card_delay();
    return rc;
}
