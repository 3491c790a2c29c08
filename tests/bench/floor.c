/* The compiled floor of the Sparkify benchmark: what the machine needs, at least, to do the job.
 *
 *   floor read THREADS < list      reads every file named on stdin (one path per line) once
 *   floor write THREADS ROOT < list   creates ROOT/<path> of <size> bytes for every "<size> <path>"
 *                                     line on stdin, folders made once, as dagrun's lake holds
 *
 * Each prints the seconds its work took (the list is read before the clock starts). Built by
 * tests/bench/run.py with `cc -O2 -pthread`; no dependency beyond libc. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct item {
    char *path;
    size_t size;
};

static struct item *items;
static size_t n_items;
static atomic_size_t next_item;
static const char *root;
static char zeros[1 << 16];

static void die(const char *what, const char *path) {
    fprintf(stderr, "floor: %s %s: %s\n", what, path, strerror(errno));
    exit(1);
}

static void read_list(int with_sizes) {
    size_t cap = 1024;
    items = malloc(cap * sizeof *items);
    char *line = NULL;
    size_t len = 0;
    ssize_t got;
    while ((got = getline(&line, &len, stdin)) > 0) {
        if (line[got - 1] == '\n') line[--got] = 0;
        if (got == 0) continue;
        if (n_items == cap) items = realloc(items, (cap *= 2) * sizeof *items);
        char *path = line;
        size_t size = 0;
        if (with_sizes) {
            size = strtoull(line, &path, 10);
            path++;
        }
        items[n_items].path = strdup(path);
        items[n_items].size = size;
        n_items++;
    }
    free(line);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void *reader(void *arg) {
    (void)arg;
    size_t cap = 1 << 20;
    char *buf = malloc(cap);
    for (size_t i; (i = atomic_fetch_add(&next_item, 1)) < n_items;) {
        int fd = open(items[i].path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) die("open", items[i].path);
        ssize_t n;
        while ((n = read(fd, buf, cap)) > 0) {
        }
        if (n < 0) die("read", items[i].path);
        close(fd);
    }
    free(buf);
    return NULL;
}

/* Makes every folder of `path` (relative to root) that does not exist yet. */
static void make_parents(char *full) {
    for (char *p = full + strlen(root) + 1; (p = strchr(p, '/')); p++) {
        *p = 0;
        if (mkdir(full, 0755) != 0 && errno != EEXIST) die("mkdir", full);
        *p = '/';
    }
}

static void *writer(void *arg) {
    (void)arg;
    char full[4096];
    char last_dir[4096] = "";
    for (size_t i; (i = atomic_fetch_add(&next_item, 1)) < n_items;) {
        snprintf(full, sizeof full, "%s/%s", root, items[i].path);
        char *slash = strrchr(full, '/');
        size_t dir_len = slash - full;
        if (strncmp(full, last_dir, dir_len) != 0 || last_dir[dir_len] != 0) {
            make_parents(full);
            memcpy(last_dir, full, dir_len);
            last_dir[dir_len] = 0;
        }
        int fd = open(full, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0) die("create", full);
        for (size_t left = items[i].size; left > 0;) {
            size_t chunk = left < sizeof zeros ? left : sizeof zeros;
            ssize_t n = write(fd, zeros, chunk);
            if (n < 0) die("write", full);
            left -= (size_t)n;
        }
        if (close(fd) != 0) die("close", full);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 3 || (strcmp(argv[1], "read") && strcmp(argv[1], "write")) || (!strcmp(argv[1], "write") && argc < 4)) {
        fprintf(stderr, "usage: floor read THREADS < paths | floor write THREADS ROOT < sizes-and-paths\n");
        return 2;
    }
    int writing = !strcmp(argv[1], "write");
    int threads = atoi(argv[2]);
    if (threads < 1) threads = 1;
    if (writing) {
        root = argv[3];
        if (mkdir(root, 0755) != 0 && errno != EEXIST) die("mkdir", root);
    }
    read_list(writing);
    pthread_t *pool = calloc(threads, sizeof *pool);
    double start = now();
    for (int t = 0; t < threads; t++) pthread_create(&pool[t], NULL, writing ? writer : reader, NULL);
    for (int t = 0; t < threads; t++) pthread_join(pool[t], NULL);
    printf("%.4f %zu\n", now() - start, n_items);
    return 0;
}
