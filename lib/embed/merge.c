/* merge.c: lt-embed --merge CACHE PART..., the parts of a sharded run (shard.c) joined into the
 * cache one lt-embed run makes.
 *
 * Every check comes before anything is written: each part must exist, be finished (renamed from
 * PART.partial, with its 'complete' mark) and be a part; together the parts must be shards 1..N
 * of one run, each once (the same N, settings, teacher, lt-embed version, listing of DATA_DIR
 * and image digest), whose ranges of files and images follow each other; every stored image must
 * match its SHA-256 and every recipe and embedding row its checksum; and the images of all parts
 * together must have the digest every part recorded, so that each part's mixup partners (drawn
 * and rendered from the survey of the whole listing) are the images the merged cache holds. Only
 * then is CACHE.partial written (images, skipped files, samples, embeddings, in shard order) and
 * renamed to CACHE. The parts are only read; a part is replaced only by an atomic rename, so one
 * opened here stays whole whatever happens to its name meanwhile. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "core/fileio.h"
#include "core/log.h"
#include "core/version.h"
#include "data/cache_check.h"
#include "embed/internal.h"

#define MERGE_BLOCK 4096 /* embedding rows copied per read */

typedef struct {
    const char *path;
    lt_cache *c;
    const lt_cache_part *p;
} part_in;

static int stopped(const lt_merge_opts *o) { return o->stop && *o->stop; }

/* A missing part, with what its .partial says about it. */
static int missing_part(const char *path) {
    char partial[4200];
    struct stat st;
    snprintf(partial, sizeof partial, "%s.partial", path);
    if (stat(partial, &st) == 0)
        return lt_err_set("%s is not finished: only %s is there, the file lt-embed --shard writes "
                          "while it runs (or what an interrupted run left); finish that shard "
                          "(rerun its command) and merge again", path, partial);
    return lt_err_set("part %s: %s", path, strerror(errno == 0 ? ENOENT : errno));
}

/* Opens every part (after a structure check in a child process: libhdf5 may crash or hang on a
 * damaged file), refusing a file given twice and CACHE itself. */
static int open_parts(const lt_merge_opts *o, part_in *ps) {
    struct stat *ids = lt_calloc((size_t)o->n_parts, sizeof *ids, "part list");
    struct stat out;
    int have_out = stat(o->cache_path, &out) == 0, rc = ids ? 0 : -1;
    for (int k = 0; rc == 0 && k < o->n_parts; k++) {
        ps[k].path = o->parts[k];
        errno = 0;
        if (stat(ps[k].path, &ids[k]) != 0) {
            rc = missing_part(ps[k].path);
            break;
        }
        if (have_out && ids[k].st_dev == out.st_dev && ids[k].st_ino == out.st_ino)
            rc = lt_err_set("%s is CACHE itself: give the merged cache another name than its "
                            "parts", ps[k].path);
        for (int j = 0; rc == 0 && j < k; j++)
            if (ids[j].st_dev == ids[k].st_dev && ids[j].st_ino == ids[k].st_ino)
                rc = lt_err_set("%s is given twice (as %s too): give each part once",
                                ps[k].path, ps[j].path);
        if (rc == 0 && (lt_cache_check_isolated(ps[k].path, 0) != 0 ||
                        lt_cache_open_part(ps[k].path, &ps[k].c) != 0))
            rc = -1;
        if (rc == 0) ps[k].p = lt_cache_part_of(ps[k].c);
    }
    free(ids);
    return rc;
}

/* b was made by the same run as a: same shard count, settings, teacher, version and listing. */
static int same_run(const part_in *a, const part_in *b) {
    const lt_cache_part *pa = a->p, *pb = b->p;
    if (pa->count != pb->count)
        return lt_err_set("%s is shard %d of %d, %s shard %d of %d: they are not parts of one run "
                          "(give the N parts of one lt-embed --shard K/N run)", a->path, pa->index,
                          pa->count, b->path, pb->index, pb->count);
    const lt_cache_meta *ma = lt_cache_meta_of(a->c), *mb = lt_cache_meta_of(b->c);
    char *ta = lt_embed_settings_text(ma, NULL, NULL), *tb = lt_embed_settings_text(mb, NULL, NULL);
    char key[64], va[256], vb[256];
    int rc = ta && tb ? 0 : -1;
    if (rc == 0 && lt_settings_diff(ta, tb, key, sizeof key, va, vb, sizeof va)) {
        if (!strcmp(key, "teacher"))
            rc = lt_err_set("%s does not belong with %s: another teacher (SHA-256 %s there, %s "
                            "here); merge only the parts of one run", b->path, a->path, va, vb);
        else {
            lt_embed_setting_shown(key, va, sizeof va);
            lt_embed_setting_shown(key, vb, sizeof vb);
            rc = lt_err_set("%s does not belong with %s: --%s was %s there, %s here; merge only "
                            "the parts of one run", b->path, a->path, key, va, vb);
        }
    }
    free(ta);
    free(tb);
    if (rc != 0) return -1;
    if (strcmp(ma->tool_version, mb->tool_version) != 0)
        return lt_err_set("%s does not belong with %s: made by lt-embed %s, %s by %s; make every "
                          "part with one version", b->path, a->path, mb->tool_version, a->path,
                          ma->tool_version);
    if (strcmp(pa->listing_sha256, pb->listing_sha256) != 0 || pa->total_files != pb->total_files)
        return lt_err_set("%s does not belong with %s: it was made from other files (the sorted "
                          "listing of DATA_DIR, names, sizes and mtimes, differs): another "
                          "folder, or files added, removed or changed between the shard runs",
                          b->path, a->path);
    if (strcmp(pa->images_sha256, pb->images_sha256) != 0 || pa->total_images != pb->total_images)
        return lt_err_set("%s does not belong with %s: they read other image contents from the "
                          "same listing (files changed between the shard runs); rerun the shards "
                          "once DATA_DIR no longer changes", b->path, a->path);
    return 0;
}

/* Sorts the parts by shard index and checks they are 1..N, each once, ranges following. */
static int check_set(const lt_merge_opts *o, part_in *ps) {
    const int N = ps[0].p->count, n = o->n_parts;
    for (int k = 1; k < n; k++)
        if (same_run(&ps[0], &ps[k]) != 0) return -1;
    part_in *by = lt_calloc((size_t)N, sizeof *by, "part list");
    if (!by) return -1;
    int rc = 0;
    for (int k = 0; rc == 0 && k < n; k++) {
        part_in *slot = &by[ps[k].p->index - 1];
        if (slot->path)
            rc = lt_err_set("%s and %s are both shard %d of %d: give each part once", slot->path,
                            ps[k].path, ps[k].p->index, N);
        else *slot = ps[k];
    }
    for (int k = 0; rc == 0 && k < N; k++)
        if (!by[k].path)
            rc = lt_err_set("shard %d of %d is missing: %d part%s given; give all %d (the files "
                            "of lt-embed --shard 1/%d ... %d/%d)", k + 1, N, n, n == 1 ? "" : "s",
                            N, N, N, N);
    int64_t files = 0, images = 0;
    for (int k = 0; rc == 0 && k < N; k++) {
        const lt_cache_part *p = by[k].p;
        if (p->first_file != files || p->first_image != images)
            rc = lt_err_set("%s: its files (from %lld) or images (from %lld) do not follow those "
                            "of shard %d (%lld, %lld): the part is damaged", by[k].path,
                            (long long)p->first_file, (long long)p->first_image, k,
                            (long long)files, (long long)images);
        files += p->files;
        images += lt_cache_n_images(by[k].c);
    }
    if (rc == 0 && (files != by[0].p->total_files || images != by[0].p->total_images))
        rc = lt_err_set("the parts hold %lld files and %lld images, their listing %lld and %lld: "
                        "a part is damaged", (long long)files, (long long)images,
                        (long long)by[0].p->total_files, (long long)by[0].p->total_images);
    if (rc == 0) memcpy(ps, by, (size_t)N * sizeof *ps);
    free(by);
    return rc;
}

/* Every stored image against its SHA-256, every row against /checksums; then the digest of all
 * the images together against the one every part recorded. */
static int verify_parts(const lt_merge_opts *o, const part_in *ps, int n) {
    lt_sha256 h;
    lt_sha256_init(&h);
    char *sha = lt_malloc(64 * MERGE_BLOCK, "image hashes");
    int rc = sha ? 0 : -1;
    for (int k = 0; rc == 0 && k < n && !stopped(o); k++) {
        int64_t checked = 0;
        lt_info("checking %s (shard %d of %d: %lld images)", ps[k].path, ps[k].p->index,
                ps[k].p->count, (long long)lt_cache_n_images(ps[k].c));
        rc = lt_cache_verify_images(ps[k].c, 1.0, 0, &checked);
        int64_t N = lt_cache_n_images(ps[k].c);
        for (int64_t i0 = 0; rc == 0 && i0 < N; i0 += MERGE_BLOCK) {
            int64_t cnt = N - i0 < MERGE_BLOCK ? N - i0 : MERGE_BLOCK;
            rc = lt_cache_image_sha256s(ps[k].c, i0, cnt, sha);
            for (int64_t i = 0; rc == 0 && i < cnt; i++) {
                char one[65];
                int32_t w, ht;
                memcpy(one, sha + 64 * i, 64);
                one[64] = 0;
                lt_cache_image_size(ps[k].c, i0 + i, &w, &ht);
                lt_shard_digest_image(&h, lt_cache_image_path(ps[k].c, i0 + i), one, w, ht);
            }
        }
    }
    free(sha);
    if (rc != 0 || stopped(o)) return rc;
    uint8_t d[32];
    char hex[65];
    lt_sha256_final(&h, d);
    lt_sha256_tohex(d, hex);
    if (strcmp(hex, ps[0].p->images_sha256) != 0)
        return lt_err_set("the images of the parts together are not those the parts were made "
                          "from (their digest differs from images_sha256): a part is damaged");
    return 0;
}

/* CACHE may be written: its folder is writable, an existing CACHE is replaced only with
 * --overwrite and only if it is an lt cache, an interrupted lt-embed run of CACHE is discarded
 * only with --overwrite. Nothing is removed here. */
static int check_output(const lt_merge_opts *o, char *partial, char *log, size_t cap) {
    struct stat st;
    snprintf(partial, cap, "%s.partial", o->cache_path);
    snprintf(log, cap, "%s.partial.emb", o->cache_path);
    int exists = stat(o->cache_path, &st) == 0;
    if (exists && S_ISDIR(st.st_mode))
        return lt_err_set("%s is a directory; give a file name for the cache", o->cache_path);
    if (exists && !o->overwrite)
        return lt_err_set("%s already exists; pass --overwrite to replace it", o->cache_path);
    if (stat(log, &st) == 0 && !o->overwrite)
        return lt_err_set("%s holds an interrupted lt-embed run of %s; pass --overwrite to discard "
                          "it, or finish that run and merge into another name", log,
                          o->cache_path);
    if (lt_embed_check_folder_writable(o->cache_path) != 0) return -1;
    if ((exists && lt_embed_check_replaceable(o->cache_path, LT_FILE_HDF5, "cache") != 0) ||
        lt_embed_check_replaceable(partial, LT_FILE_HDF5, "partial") != 0 ||
        lt_embed_check_replaceable(log, LT_FILE_EMBLOG, "log") != 0)
        return -1;
    return 0;
}

/* The images of every part, in shard order, then their skipped files. */
static int copy_images(const lt_merge_opts *o, const part_in *ps, int n, lt_cache_writer *w) {
    for (int k = 0; k < n; k++) {
        for (int64_t i = 0; i < lt_cache_n_images(ps[k].c); i++) {
            if (stopped(o)) return 0;
            lt_cache_image rec;
            uint8_t *bytes = NULL;
            size_t len = 0;
            if (lt_cache_image_record(ps[k].c, i, &rec) != 0 ||
                lt_cache_image_bytes(ps[k].c, i, &bytes, &len) != 0)
                return -1;
            rec.bytes = bytes;
            rec.n_bytes = len;
            int rc = lt_cache_writer_add_image(w, &rec);
            free(bytes);
            if (rc != 0) return -1;
        }
    }
    for (int k = 0; k < n; k++)
        for (int64_t j = 0; j < lt_cache_n_skipped(ps[k].c); j++) {
            const char *path, *reason;
            lt_cache_skipped(ps[k].c, j, &path, &reason);
            if (lt_cache_writer_add_skipped(w, path, reason) != 0) return -1;
        }
    return 0;
}

/* The samples of every part (their image indices are the whole cache's already), then the
 * embedding rows as stored, block by block. */
static int copy_rows(const lt_merge_opts *o, const part_in *ps, int n, int64_t S,
                     lt_cache_writer *w) {
    lt_sample *smp = lt_malloc((size_t)S * sizeof *smp, "sample recipes");
    int rc = smp ? 0 : -1;
    for (int64_t k = 0, at = 0; rc == 0 && k < n; at += lt_cache_n_samples(ps[k].c), k++)
        rc = lt_cache_samples(ps[k].c, 0, lt_cache_n_samples(ps[k].c), smp + at);
    if (rc == 0) rc = lt_cache_writer_set_samples(w, smp, S);
    free(smp);
    const lt_cache_meta *m = lt_cache_meta_of(ps[0].c);
    size_t rb = lt_emb_row_bytes(m->emb_type, m->embed_dim);
    uint8_t *rows = rc == 0 ? lt_malloc(MERGE_BLOCK * rb, "embedding rows") : NULL;
    if (!rows) rc = -1;
    for (int64_t k = 0, at = 0; rc == 0 && k < n; at += lt_cache_n_samples(ps[k].c), k++) {
        int64_t s_n = lt_cache_n_samples(ps[k].c);
        for (int64_t s0 = 0; rc == 0 && s0 < s_n && !stopped(o); s0 += MERGE_BLOCK) {
            int64_t cnt = s_n - s0 < MERGE_BLOCK ? s_n - s0 : MERGE_BLOCK;
            rc = lt_cache_embeddings_raw(ps[k].c, s0, cnt, rows);
            if (rc == 0) rc = lt_cache_writer_put_embeddings_raw(w, at + s0, cnt, rows);
        }
    }
    free(rows);
    return rc;
}

static int write_cache(const lt_merge_opts *o, const part_in *ps, int n, const char *partial,
                       const char *log, lt_merge_report *rep) {
    int64_t S = 0;
    for (int k = 0; k < n; k++) {
        rep->images += lt_cache_n_images(ps[k].c);
        rep->skipped += lt_cache_n_skipped(ps[k].c);
        S += lt_cache_n_samples(ps[k].c);
    }
    rep->samples = S;
    /* --overwrite: an interrupted lt-embed run of CACHE is discarded (checked: lt's own files) */
    if ((unlink(log) != 0 && errno != ENOENT) || (unlink(partial) != 0 && errno != ENOENT)) {
        lt_err_set("%s: cannot remove: %s", partial, strerror(errno));
        return LT_EXIT_ERROR;
    }
    lt_cache_meta meta = *lt_cache_meta_of(ps[0].c);
    lt_cache_writer *w = NULL;
    if (lt_cache_writer_create(o->cache_path, &meta, &w) != 0) return LT_EXIT_ERROR;
    int rc = copy_images(o, ps, n, w);
    if (rc == 0 && !stopped(o)) rc = copy_rows(o, ps, n, S, w);
    if (rc != 0 || stopped(o)) {
        lt_cache_writer_abort(w);
        return rc != 0 ? LT_EXIT_ERROR : LT_EXIT_INTERRUPTED;
    }
    if (lt_cache_writer_finish(w) != 0) return LT_EXIT_ERROR;
    struct stat st;
    if (stat(o->cache_path, &st) == 0) rep->cache_bytes = st.st_size;
    return LT_EXIT_OK;
}

int lt_embed_merge(const lt_merge_opts *o, lt_merge_report *rep) {
    double t0 = lt_now();
    memset(rep, 0, sizeof *rep);
    char partial[4200], log[4200];
    part_in *ps = lt_calloc((size_t)o->n_parts, sizeof *ps, "part list");
    int rc = LT_EXIT_ERROR;
    if (ps && check_output(o, partial, log, sizeof partial) == 0 && open_parts(o, ps) == 0 &&
        check_set(o, ps) == 0 && verify_parts(o, ps, o->n_parts) == 0)
        rc = stopped(o) ? LT_EXIT_INTERRUPTED
                        : write_cache(o, ps, o->n_parts, partial, log, rep);
    if (rc == LT_EXIT_ERROR && stopped(o)) rc = LT_EXIT_INTERRUPTED;
    for (int k = 0; ps && k < o->n_parts; k++) lt_cache_close(ps[k].c);
    free(ps);
    rep->seconds = lt_now() - t0;
    return rc;
}
