/* scan.c: lists the images under a data folder (see scan.h).
 *
 * It exists so that both tools agree on which files make up a dataset and in which order, whatever
 * the file system returns: paths are relative to the root and sorted with strcmp.
 *
 * Choices: symlinks to files and folders are followed; a folder already visited (same device and
 * inode) is skipped, so a symlink cycle ends and a folder reachable twice is listed once (under the
 * path met first in a walk that visits each folder's entries in strcmp order). A file reachable
 * under two names (two symlinks, or a hard link) is listed under each name. Hidden files and
 * folders (leading '.') are NOT skipped. Unreadable folders and dangling symlinks are reported to
 * the warn callback and skipped. */
#include "scan.h"

#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "core/error.h"
#include "core/fileio.h"

/* ---------------------------------------------------------------- visited folders (hash set) */

typedef struct {
    dev_t dev;
    ino_t ino;
    int used;
} dir_slot;

typedef struct {
    dir_slot *slots;
    size_t cap, n; /* cap is a power of two */
} dir_set;

static size_t dir_hash(dev_t dev, ino_t ino) {
    uint64_t x = (uint64_t)ino * 0x9e3779b97f4a7c15ull ^ (uint64_t)dev * 0xc2b2ae3d27d4eb4full;
    return (size_t)(x ^ (x >> 29));
}

/* Inserts without growing; returns 1 if added, 0 if already there. */
static int dir_set_put(dir_slot *slots, size_t cap, dev_t dev, ino_t ino) {
    for (size_t i = dir_hash(dev, ino) & (cap - 1);; i = (i + 1) & (cap - 1)) {
        if (!slots[i].used) {
            slots[i] = (dir_slot){dev, ino, 1};
            return 1;
        }
        if (slots[i].dev == dev && slots[i].ino == ino) return 0;
    }
}

/* 1 if (dev, ino) was new, 0 if already visited, -1 on OOM. */
static int dir_set_add(dir_set *s, dev_t dev, ino_t ino) {
    if (2 * (s->n + 1) > s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 64;
        dir_slot *slots = lt_calloc(cap, sizeof *slots, "visited folders");
        if (!slots) return -1;
        for (size_t i = 0; i < s->cap; i++)
            if (s->slots[i].used) dir_set_put(slots, cap, s->slots[i].dev, s->slots[i].ino);
        free(s->slots);
        s->slots = slots;
        s->cap = cap;
    }
    int added = dir_set_put(s->slots, s->cap, dev, ino);
    s->n += (size_t)added;
    return added;
}

/* ---------------------------------------------------------------- growable string list */

typedef struct {
    char **v;
    size_t n, cap;
} strvec;

/* Takes ownership of str (freed on failure). */
static int strvec_push(strvec *sv, char *str) {
    if (!str) return -1;
    if (sv->n == sv->cap) {
        size_t cap = sv->cap ? 2 * sv->cap : 64;
        char **v = realloc(sv->v, cap * sizeof *v);
        if (!v) {
            free(str);
            return lt_err_set("out of memory (file list of %zu entries)", cap);
        }
        sv->v = v;
        sv->cap = cap;
    }
    sv->v[sv->n++] = str;
    return 0;
}

static void strvec_free(strvec *sv) {
    for (size_t i = 0; i < sv->n; i++) free(sv->v[i]);
    free(sv->v);
    memset(sv, 0, sizeof *sv);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* ---------------------------------------------------------------- the walk */

typedef struct {
    dir_set seen;
    strvec files;
    lt_scan_warn_fn warn;
    void *ctx;
} scan_state;

static void scan_warn(scan_state *s, const char *fmt, const char *path, int err) {
    if (!s->warn) return;
    char msg[4096 + 256];
    snprintf(msg, sizeof msg, fmt, path, strerror(err));
    s->warn(msg, s->ctx);
}

static char *dup_or_err(const char *s) {
    char *d = strdup(s);
    if (!d) lt_err_set("out of memory (path)");
    return d;
}

int lt_scan_is_image_name(const char *name) {
    static const char *const exts[] = {".jpg", ".jpeg", ".png"};
    size_t len = strlen(name);
    for (size_t i = 0; i < sizeof exts / sizeof *exts; i++) {
        size_t le = strlen(exts[i]);
        if (len > le && strcasecmp(name + len - le, exts[i]) == 0) return 1;
    }
    return 0;
}

static int cmp_entry(const void *a, const void *b) {
    return strcmp(*(char *const *)a + 1, *(char *const *)b + 1);
}

/* The entries of folder abs (without "." and ".."), sorted by name. Each string is the d_type
 * byte followed by the name, so regular files need no stat() (fast on big or remote folders). A
 * folder that cannot be opened or read is warned about; returns -1 only on OOM. */
static int list_folder(scan_state *s, const char *abs, strvec *entries) {
    DIR *d = opendir(abs);
    if (!d) {
        scan_warn(s, "cannot read folder %s: %s (skipped)", abs, errno);
        return 0;
    }
    for (;;) {
        errno = 0;
        struct dirent *e = readdir(d);
        if (!e) {
            if (errno) scan_warn(s, "error reading folder %s: %s (rest of it skipped)", abs, errno);
            break;
        }
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        size_t len = strlen(e->d_name);
        char *ent = lt_malloc(len + 2, "folder entry");
        if (ent) {
            ent[0] = (char)e->d_type; /* DT_UNKNOWN (0) where the fs does not say */
            memcpy(ent + 1, e->d_name, len + 1);
        }
        if (strvec_push(entries, ent) != 0) {
            closedir(d);
            return -1;
        }
    }
    closedir(d);
    qsort(entries->v, entries->n, sizeof *entries->v, cmp_entry);
    return 0;
}

static int walk(scan_state *s, const char *abs, const char *rel);

/* Handles one folder entry: adds an image file, descends into a folder not yet visited. */
static int visit_entry(scan_state *s, unsigned char type, const char *abs, const char *rel) {
    int image = lt_scan_is_image_name(lt_path_base(rel));
    if (type == DT_REG) return image ? strvec_push(&s->files, dup_or_err(rel)) : 0;
    if (type != DT_DIR && type != DT_LNK && type != DT_UNKNOWN) return 0; /* fifo, socket... */
    struct stat st;
    if (stat(abs, &st) != 0) {
        scan_warn(s, "cannot access %s: %s (skipped)", abs, errno);
        return 0;
    }
    if (S_ISDIR(st.st_mode)) {
        int added = dir_set_add(&s->seen, st.st_dev, st.st_ino);
        if (added < 0) return -1;
        return added ? walk(s, abs, rel) : 0;
    }
    if (S_ISREG(st.st_mode) && image) return strvec_push(&s->files, dup_or_err(rel));
    return 0;
}

static int walk(scan_state *s, const char *abs, const char *rel) {
    strvec entries = {0};
    int rc = list_folder(s, abs, &entries);
    for (size_t i = 0; rc == 0 && i < entries.n; i++) {
        unsigned char type = (unsigned char)entries.v[i][0];
        const char *name = entries.v[i] + 1;
        char *cabs = lt_path_join(abs, name);
        char *crel = rel[0] ? lt_path_join(rel, name) : dup_or_err(name);
        rc = cabs && crel ? visit_entry(s, type, cabs, crel) : -1;
        free(cabs);
        free(crel);
    }
    strvec_free(&entries);
    return rc;
}

int lt_scan_check_root(const char *root) {
    struct stat st;
    if (stat(root, &st) != 0) {
        if (errno == ENOENT) return lt_err_set("data folder %s does not exist", root);
        return lt_err_set("cannot access data folder %s: %s", root, strerror(errno));
    }
    if (!S_ISDIR(st.st_mode)) return lt_err_set("data folder %s is not a directory", root);
    DIR *probe = opendir(root);
    if (!probe) return lt_err_set("cannot read data folder %s: %s", root, strerror(errno));
    closedir(probe);
    return 0;
}

int lt_scan_dir(const char *root, lt_filelist *out, lt_scan_warn_fn warn, void *ctx) {
    out->paths = NULL;
    out->n = 0;
    struct stat st;
    if (lt_scan_check_root(root) != 0 || stat(root, &st) != 0) return -1;

    scan_state s = {.warn = warn, .ctx = ctx};
    int rc = dir_set_add(&s.seen, st.st_dev, st.st_ino) < 0 ? -1 : walk(&s, root, "");
    free(s.seen.slots);
    if (rc != 0) {
        strvec_free(&s.files);
        return -1;
    }
    qsort(s.files.v, s.files.n, sizeof *s.files.v, cmp_str);
    out->paths = s.files.v;
    out->n = s.files.n;
    return 0;
}

void lt_filelist_free(lt_filelist *l) {
    if (!l) return;
    for (size_t i = 0; i < l->n; i++) free(l->paths[i]);
    free(l->paths);
    l->paths = NULL;
    l->n = 0;
}

/* The real path of path's folder (resolving the nearest existing ancestor, the missing part kept
 * as written) followed by its last component; malloc'd, NULL if nothing resolves. */
static char *resolve_parent(const char *path) {
    size_t n = strlen(path);
    char *p = strdup(path);
    if (!p) return NULL;
    while (n > 1 && p[n - 1] == '/') p[--n] = 0; /* "dir/" names dir */
    char *cut = p + n;                            /* p[0, cut) is the part tried */
    for (;;) {
        while (cut > p && cut[-1] != '/') cut--;  /* drop the last component */
        char keep = *cut;
        *cut = 0;
        char *real = realpath(cut == p ? "." : p, NULL);
        *cut = keep;
        if (real || cut == p || errno != ENOENT) {
            char *out = NULL;
            if (real && asprintf(&out, "%s/%s", real, cut) < 0) out = NULL;
            free(real);
            free(p);
            return out;
        }
        while (cut > p && cut[-1] == '/') cut--;
    }
}

int lt_scan_contains(const char *root, const char *path) {
    char *r = realpath(root, NULL), *p = resolve_parent(path);
    size_t n = r ? strlen(r) : 0;
    int in = r && p && (n == 1 || (!strncmp(p, r, n) && (p[n] == '/' || p[n] == 0)));
    free(r);
    free(p);
    return in;
}
