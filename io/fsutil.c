/* Atomic replace and whole-file read; see fsutil.h. */
#include "fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

static int fsutil__write_full(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

int fsutil_write_atomic(const char *path, const fsutil_part_t *parts, int n,
                        char *err, size_t errlen)
{
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 32);
    char *dircopy = strdup(path);
    int fd = -1, rc = 0;
    if (!tmp || !dircopy) {
        rc = -ENOMEM;
        snprintf(err, errlen, "%s: out of memory", path);
        goto done;
    }
    /* A unique name (mkstemp opens with O_EXCL), so concurrent writers of
     * one path never share a temp file. */
    snprintf(tmp, plen + 32, "%s.tmp.XXXXXX", path);
    fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        snprintf(err, errlen, "%s: cannot create its temporary file %s: %s", path, tmp,
                 strerror(errno));
        goto done;
    }
    if (fchmod(fd, 0644) < 0) {
        rc = -errno;
        snprintf(err, errlen, "%s: chmod: %s", tmp, strerror(errno));
        goto fail;
    }
    for (int k = 0; k < n; k++) {
        rc = fsutil__write_full(fd, parts[k].data, parts[k].len);
        if (rc < 0) {
            snprintf(err, errlen, "%s: write: %s", tmp, strerror(-rc));
            goto fail;
        }
    }
    if (fsync(fd) < 0) {
        rc = -errno;
        snprintf(err, errlen, "%s: fsync: %s", tmp, strerror(errno));
        goto fail;
    }
    if (close(fd) < 0) {
        fd = -1;
        rc = -errno;
        snprintf(err, errlen, "%s: close: %s", tmp, strerror(errno));
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) < 0) {
        rc = -errno;
        snprintf(err, errlen, "rename %s: %s", path, strerror(errno));
        goto fail;
    }
    /* The new file is in place, but until its directory is synced its
     * name may not survive a power cut: a failure is reported, the caller
     * decides (a checkpoint is then not durable, its positions not
     * committed). */
    int dfd = open(dirname(dircopy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
        rc = -errno;
        snprintf(err, errlen, "%s: written, but its directory could not be opened to sync: %s",
                 path, strerror(errno));
    } else {
        if (fsync(dfd) < 0 && errno != EINVAL) {
            rc = -errno;
            snprintf(err, errlen, "%s: written, but fsync of its directory failed: %s", path,
                     strerror(errno));
        }
        close(dfd);
    }
    goto done;
fail:
    if (fd >= 0)
        close(fd);
    unlink(tmp);
done:
    free(tmp);
    free(dircopy);
    return rc;
}

int fsutil_check_writable(const char *path, char *err, size_t errlen)
{
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "%s: is a directory", path);
        return -EISDIR;
    }
    char *dircopy = strdup(path);
    if (!dircopy) {
        snprintf(err, errlen, "%s: out of memory", path);
        return -ENOMEM;
    }
    const char *dir = dirname(dircopy);
    int rc = 0;
    if (access(dir, W_OK | X_OK) < 0) {
        rc = -errno;
        snprintf(err, errlen, "%s: cannot write in its directory %s: %s", path, dir,
                 strerror(errno));
    }
    free(dircopy);
    return rc;
}

int fsutil_read_all(const char *path, size_t max_len, unsigned char **out,
                    size_t *len, char *err, size_t errlen)
{
    *out = NULL;
    *len = 0;
    /* O_NONBLOCK: opening a FIFO put where a file belongs would otherwise
     * wait for a writer; it is refused below as not a regular file (on
     * which O_NONBLOCK changes nothing). */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "%s: %s", path, strerror(e));
        return -e;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = errno;
        snprintf(err, errlen, "%s: %s", path, strerror(e));
        close(fd);
        return -e;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", path);
        close(fd);
        return -EINVAL;
    }
    if ((unsigned long long)st.st_size > max_len) {
        snprintf(err, errlen, "%s: %lld bytes, over the limit of %zu", path,
                 (long long)st.st_size, max_len);
        close(fd);
        return -EFBIG;
    }
    size_t n = (size_t)st.st_size;
    unsigned char *buf = malloc(n ? n : 1);
    if (!buf) {
        snprintf(err, errlen, "%s: out of memory", path);
        close(fd);
        return -ENOMEM;
    }
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            int e = r < 0 ? errno : EIO;
            snprintf(err, errlen, "%s: read: %s", path, r < 0 ? strerror(e) : "file shrank");
            free(buf);
            close(fd);
            return -e;
        }
        got += (size_t)r;
    }
    close(fd);
    *out = buf;
    *len = n;
    return 0;
}

int fsutil_lock_dir(const char *dir, char *err, size_t errlen)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/lock", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "%s: %s", path, strerror(e));
        return -e;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;
        close(fd);
        if (e == EWOULDBLOCK) {
            snprintf(err, errlen, "%s is in use by another process (lock %s held)", dir, path);
            return -EBUSY;
        }
        snprintf(err, errlen, "%s: flock: %s", path, strerror(e));
        return -e;
    }
    return fd;
}

int fsutil_name_number(const char *name, const char *prefix, const char *suffix, uint64_t *n)
{
    size_t lp = strlen(prefix), ls = strlen(suffix);
    if (strlen(name) != lp + 20 + ls || strncmp(name, prefix, lp) != 0 ||
        strcmp(name + lp + 20, suffix) != 0)
        return 0;
    uint64_t v = 0;
    for (size_t k = lp; k < lp + 20; k++) {
        if (name[k] < '0' || name[k] > '9')
            return 0;
        uint64_t d = (uint64_t)(name[k] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return 0;
        v = v * 10 + d;
    }
    *n = v;
    return 1;
}

int fsutil_cmp_u64_desc(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}
