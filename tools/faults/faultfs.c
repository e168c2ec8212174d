/*
 * faultfs: an LD_PRELOAD shim that makes file writes and syncs fail on demand, for the fault
 * tests of the persistence tier (Tests/IntegrationTests/test_disk_faults.py).
 *
 *   RINGCACHE_FAULTS=/path/to/control   the control file, read again when it changes
 *   RINGCACHE_FAULTS_PATH=/data/dir     only files whose path starts with this are affected
 *
 * The control file holds one line: `none`, or `<what> <errno> [once]`, where <what> is
 * `write` (write, pwrite, writev, pwritev and their 64-bit names), `sync` (fsync, fdatasync)
 * or `all`, and <errno> is ENOSPC, EIO or EDQUOT. With `once`, only the first matching call
 * after the file changed fails. Sockets, pipes and files elsewhere are never touched.
 *
 * Build: cc -shared -fPIC -O2 -o libfaultfs.so faultfs.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

enum { WHAT_NONE = 0, WHAT_WRITE = 1, WHAT_SYNC = 2 };

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int what = WHAT_NONE;
static int error_number = 0;
static int once = 0;
static int fired = 0;
static struct timespec seen_mtime;
static struct timespec last_check;

/* Re-reads the control file when it changed (checked at most every 2 ms). */
static void refresh(void) {
    const char *control = getenv("RINGCACHE_FAULTS");
    if (!control) return;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long elapsed = (now.tv_sec - last_check.tv_sec) * 1000000000L + (now.tv_nsec - last_check.tv_nsec);
    if (elapsed < 2000000L && (last_check.tv_sec | last_check.tv_nsec)) return;
    last_check = now;
    struct stat info;
    if (stat(control, &info) != 0) return;
    if (info.st_mtim.tv_sec == seen_mtime.tv_sec && info.st_mtim.tv_nsec == seen_mtime.tv_nsec) return;
    seen_mtime = info.st_mtim;
    int fd = open(control, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    char line[128] = {0};
    ssize_t got = read(fd, line, sizeof line - 1);
    close(fd);
    if (got < 0) return;
    char kind[32] = {0}, code[32] = {0}, mode[32] = {0};
    int fields = sscanf(line, "%31s %31s %31s", kind, code, mode);
    what = WHAT_NONE;
    fired = 0;
    once = fields >= 3 && strcmp(mode, "once") == 0;
    if (fields < 2 || strcmp(kind, "none") == 0) return;
    error_number = strcmp(code, "ENOSPC") == 0 ? ENOSPC : strcmp(code, "EDQUOT") == 0 ? EDQUOT : EIO;
    if (strcmp(kind, "write") == 0) what = WHAT_WRITE;
    else if (strcmp(kind, "sync") == 0) what = WHAT_SYNC;
    else if (strcmp(kind, "all") == 0) what = WHAT_WRITE | WHAT_SYNC;
}

/* True if a call of this kind on fd should fail now (and sets errno). */
static int should_fail(int fd, int kind) {
    if (!getenv("RINGCACHE_FAULTS")) return 0;
    pthread_mutex_lock(&lock);
    refresh();
    int armed = (what & kind) && !(once && fired);
    pthread_mutex_unlock(&lock);
    if (!armed) return 0;
    struct stat info;
    if (fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) return 0;
    const char *prefix = getenv("RINGCACHE_FAULTS_PATH");
    if (prefix) {
        char link[64], target[PATH_MAX];
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        ssize_t length = readlink(link, target, sizeof target - 1);
        if (length <= 0) return 0;
        target[length] = 0;
        if (strncmp(target, prefix, strlen(prefix)) != 0) return 0;
    }
    pthread_mutex_lock(&lock);
    int fail = (what & kind) && !(once && fired);
    if (fail) fired = 1;
    int code = error_number;
    pthread_mutex_unlock(&lock);
    if (fail) errno = code;
    return fail;
}

#define REAL(name) static __typeof__(&name) real_##name; if (!real_##name) real_##name = (__typeof__(&name))dlsym(RTLD_NEXT, #name)

ssize_t write(int fd, const void *buffer, size_t count) {
    REAL(write);
    if (should_fail(fd, WHAT_WRITE)) return -1;
    return real_write(fd, buffer, count);
}

ssize_t pwrite(int fd, const void *buffer, size_t count, off_t offset) {
    REAL(pwrite);
    if (should_fail(fd, WHAT_WRITE)) return -1;
    return real_pwrite(fd, buffer, count, offset);
}

ssize_t pwrite64(int fd, const void *buffer, size_t count, off64_t offset) {
    REAL(pwrite64);
    if (should_fail(fd, WHAT_WRITE)) return -1;
    return real_pwrite64(fd, buffer, count, offset);
}

ssize_t writev(int fd, const struct iovec *vectors, int count) {
    REAL(writev);
    if (should_fail(fd, WHAT_WRITE)) return -1;
    return real_writev(fd, vectors, count);
}

ssize_t pwritev(int fd, const struct iovec *vectors, int count, off_t offset) {
    REAL(pwritev);
    if (should_fail(fd, WHAT_WRITE)) return -1;
    return real_pwritev(fd, vectors, count, offset);
}

ssize_t pwritev64(int fd, const struct iovec *vectors, int count, off64_t offset) {
    REAL(pwritev64);
    if (should_fail(fd, WHAT_WRITE)) return -1;
    return real_pwritev64(fd, vectors, count, offset);
}

int fsync(int fd) {
    REAL(fsync);
    if (should_fail(fd, WHAT_SYNC)) return -1;
    return real_fsync(fd);
}

int fdatasync(int fd) {
    REAL(fdatasync);
    if (should_fail(fd, WHAT_SYNC)) return -1;
    return real_fdatasync(fd);
}
