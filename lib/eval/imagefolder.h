/* imagefolder.h: a labelled image folder as torchvision's ImageFolder reads it, for lt-eval.
 *
 * Why it exists: evaluation needs labels, and lt's other inputs have none. Layout:
 * DIR/train/<class>/… and DIR/val/<class>/…; a class is a folder directly under train/ (or val/),
 * classes are sorted bytewise (strcmp, the order of Python's sorted() on the names), label =
 * index in that order. The images of a class are every .jpg/.jpeg/.png found below its folder,
 * recursively, with the rules of lt_scan_dir (data/scan.h: symlinks followed, sorted paths).
 * Files lying directly in train/ or val/ belong to no class and are ignored, as ImageFolder
 * ignores them. Both splits must have the same classes and no class may be empty; anything else
 * is an error naming the folder. */
#ifndef LT_EVAL_IMAGEFOLDER_H
#define LT_EVAL_IMAGEFOLDER_H

#include <stddef.h>
#include <stdint.h>

#include "data/scan.h"

typedef struct {
    char **paths;     /* (n) relative to the data folder, e.g. "train/cat/001.jpg" */
    int32_t *labels;  /* (n) class index */
    size_t n;
} lt_eval_split;

typedef struct {
    int n_classes;
    char **classes;   /* (n_classes) sorted names */
    lt_eval_split train, val;
} lt_imagefolder;

/* Reads DIR's classes and files. warn gets unreadable-folder messages of the scan (may be NULL).
 * -1 + lt_err naming the folder on: DIR missing, no train/ or val/, a split without class
 * folders, an empty class, a class in one split but not the other. */
int lt_imagefolder_open(const char *dir, lt_imagefolder *out, lt_scan_warn_fn warn, void *ctx);
void lt_imagefolder_free(lt_imagefolder *f);

#endif
