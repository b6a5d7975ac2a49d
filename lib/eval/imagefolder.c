/* imagefolder.c: classes and files of a labelled folder (see imagefolder.h). */
#include "eval/imagefolder.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/error.h"
#include "core/fileio.h"

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void free_names(char **v, int n) {
    for (int i = 0; i < n; i++) free(v[i]);
    free(v);
}

/* The sorted names of the folders directly in dir (symlinks to folders count). */
static int list_classes(const char *dir, char ***out, int *n_out) {
    *out = NULL;
    *n_out = 0;
    DIR *d = opendir(dir);
    if (!d) return lt_err_set("%s: cannot read the folder", dir);
    char **v = NULL;
    int n = 0, cap = 0, rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *full = lt_path_join(dir, e->d_name);
        struct stat st;
        if (!full) {
            rc = -1;
            break;
        }
        int is_dir = stat(full, &st) == 0 && S_ISDIR(st.st_mode);
        free(full);
        if (!is_dir) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            char **nv = realloc(v, (size_t)cap * sizeof *v);
            if (!nv) {
                rc = lt_err_set("out of memory (class list)");
                break;
            }
            v = nv;
        }
        if (!(v[n] = strdup(e->d_name))) rc = lt_err_set("out of memory (class list)");
        else n++;
    }
    closedir(d);
    if (rc != 0) {
        free_names(v, n);
        return -1;
    }
    if (n > 1) qsort(v, (size_t)n, sizeof *v, cmp_str);
    *out = v;
    *n_out = n;
    return 0;
}

static void split_free(lt_eval_split *s) {
    for (size_t i = 0; i < s->n; i++) free(s->paths[i]);
    free(s->paths);
    free(s->labels);
    memset(s, 0, sizeof *s);
}

/* Scans every class folder of root/split in class order; paths become "split/class/rel". */
static int read_split(const char *root, const char *split, char **classes, int n_classes,
                      lt_eval_split *out, lt_scan_warn_fn warn, void *ctx) {
    memset(out, 0, sizeof *out);
    size_t cap = 0;
    for (int c = 0; c < n_classes; c++) {
        char rel_dir[4096];
        snprintf(rel_dir, sizeof rel_dir, "%s/%s", split, classes[c]);
        char *dir = lt_path_join(root, rel_dir);
        if (!dir) return -1;
        lt_filelist fl = {0};
        int rc = lt_scan_dir(dir, &fl, warn, ctx);
        free(dir);
        if (rc != 0) return -1;
        if (fl.n == 0) {
            lt_filelist_free(&fl);
            return lt_err_set("%s/%s: the class '%s' holds no images (.jpg, .jpeg or .png); every "
                              "class folder needs at least one", root, rel_dir, classes[c]);
        }
        if (out->n + fl.n > cap) {
            size_t nc = (out->n + fl.n) * 2;
            char **p = realloc(out->paths, nc * sizeof *p);
            if (p) out->paths = p;
            int32_t *l = realloc(out->labels, nc * sizeof *l);
            if (l) out->labels = l;
            if (!p || !l) {
                lt_filelist_free(&fl);
                return lt_err_set("out of memory (file list)");
            }
            cap = nc;
        }
        for (size_t i = 0; i < fl.n; i++) {
            size_t len = strlen(rel_dir) + strlen(fl.paths[i]) + 2;
            char *p = malloc(len);
            if (!p) {
                lt_filelist_free(&fl);
                return lt_err_set("out of memory (file list)");
            }
            snprintf(p, len, "%s/%s", rel_dir, fl.paths[i]);
            out->paths[out->n] = p;
            out->labels[out->n++] = c;
        }
        lt_filelist_free(&fl);
    }
    return 0;
}

static int open_split_classes(const char *dir, const char *split, char ***classes, int *n) {
    char *p = lt_path_join(dir, split);
    if (!p) return -1;
    struct stat st;
    int rc = 0;
    if (stat(p, &st) != 0 || !S_ISDIR(st.st_mode))
        rc = lt_err_set("%s has no %s/ folder: lt-eval expects DIR/train/<class>/<image> and "
                        "DIR/val/<class>/<image>", dir, split);
    else if (list_classes(p, classes, n) != 0)
        rc = -1;
    else if (*n == 0)
        rc = lt_err_set("%s has no class folders: lt-eval expects %s/<class>/<image>, one folder "
                        "per class", p, p);
    free(p);
    return rc;
}

int lt_imagefolder_open(const char *dir, lt_imagefolder *out, lt_scan_warn_fn warn, void *ctx) {
    memset(out, 0, sizeof *out);
    if (lt_scan_check_root(dir) != 0) return -1;
    char **tc = NULL, **vc = NULL;
    int nt = 0, nv = 0;
    int rc = open_split_classes(dir, "train", &tc, &nt);
    if (rc == 0) rc = open_split_classes(dir, "val", &vc, &nv);
    /* both lists are sorted: walk them together to find the first class in only one */
    for (int i = 0, j = 0; rc == 0 && (i < nt || j < nv);) {
        int c = i == nt ? 1 : j == nv ? -1 : strcmp(tc[i], vc[j]);
        if (c > 0)
            rc = lt_err_set("%s/val/%s: class '%s' is not in %s/train (train and val must have "
                            "the same class folders)", dir, vc[j], vc[j], dir);
        else if (c < 0)
            rc = lt_err_set("%s/train/%s: class '%s' is not in %s/val (train and val must have "
                            "the same class folders)", dir, tc[i], tc[i], dir);
        else
            i++, j++;
    }
    free_names(vc, nv);
    if (rc != 0) {
        free_names(tc, nt);
        return -1;
    }
    out->classes = tc;
    out->n_classes = nt;
    if (read_split(dir, "train", tc, nt, &out->train, warn, ctx) != 0 ||
        read_split(dir, "val", tc, nt, &out->val, warn, ctx) != 0) {
        lt_imagefolder_free(out);
        return -1;
    }
    return 0;
}

void lt_imagefolder_free(lt_imagefolder *f) {
    free_names(f->classes, f->n_classes);
    split_free(&f->train);
    split_free(&f->val);
    memset(f, 0, sizeof *f);
}
