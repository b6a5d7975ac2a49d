/* test_core.c: Philox4x32-10 against the Random123 known-answer vectors, RNG helpers, SHA-256
 * against the FIPS 180-4 examples, float16 conversion edge cases, message escaping, the output
 * locks between processes. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "core/cli.h"
#include "core/error.h"
#include "core/half.h"
#include "core/lock.h"
#include "core/rng.h"
#include "core/sha256.h"

static void test_philox(void) {
    /* Known-answer tests from Random123's kat_vectors (philox4x32 10 rounds). */
    struct { uint32_t ctr[4], key[2], out[4]; } kat[] = {
        {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
        {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff},
         {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
        {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0},
         {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
    };
    for (size_t k = 0; k < sizeof kat / sizeof kat[0]; k++) {
        uint32_t out[4];
        lt_philox4x32(kat[k].ctr, kat[k].key, out);
        CHECK_MSG(memcmp(out, kat[k].out, sizeof out) == 0, "philox KAT %zu", k);
    }
    /* Streams are reproducible and distinct; uniform draws lie in [0,1) with mean ~ 0.5. */
    lt_rng a, b, c;
    lt_rng_init(&a, 7, 1, 2, 3);
    lt_rng_init(&b, 7, 1, 2, 3);
    lt_rng_init(&c, 7, 1, 2, 4);
    int same = 1, diff = 0;
    double sum = 0;
    for (int i = 0; i < 100000; i++) {
        uint32_t x = lt_rng_u32(&a), y = lt_rng_u32(&b), z = lt_rng_u32(&c);
        same &= x == y;
        diff += x != z;
    }
    CHECK(same);
    CHECK(diff > 99000);
    for (int i = 0; i < 100000; i++) {
        double u = lt_rng_uniform(&a);
        CHECK(u >= 0 && u < 1);
        sum += u;
    }
    CHECK(fabs(sum / 100000 - 0.5) < 0.01);
    int hist[7] = {0};
    for (int i = 0; i < 70000; i++) hist[lt_rng_below(&a, 7)]++;
    for (int i = 0; i < 7; i++) CHECK(abs(hist[i] - 10000) < 500);
    uint32_t perm[50];
    for (uint32_t i = 0; i < 50; i++) perm[i] = i;
    lt_rng_shuffle_u32(&a, perm, 50);
    int seen[50] = {0}, moved = 0;
    for (uint32_t i = 0; i < 50; i++) {
        seen[perm[i]]++;
        moved += perm[i] != i;
    }
    for (int i = 0; i < 50; i++) CHECK(seen[i] == 1);
    CHECK(moved > 30);
}

static void test_sha256(void) {
    char hex[65];
    lt_sha256_hex("abc", 3, hex);
    CHECK(!strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
    lt_sha256_hex("", 0, hex);
    CHECK(!strcmp(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
    const char *m = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    lt_sha256_hex(m, strlen(m), hex);
    CHECK(!strcmp(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"));
    /* one million 'a', fed in uneven pieces */
    lt_sha256 s;
    uint8_t d[32], buf[997];
    memset(buf, 'a', sizeof buf);
    lt_sha256_init(&s);
    size_t left = 1000000;
    while (left) {
        size_t n = left < sizeof buf ? left : sizeof buf;
        lt_sha256_update(&s, buf, n);
        left -= n;
    }
    lt_sha256_final(&s, d);
    lt_sha256_tohex(d, hex);
    CHECK(!strcmp(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"));
}

static void test_half(void) {
    CHECK(lt_f32_to_f16(1.0f) == 0x3c00);
    CHECK(lt_f32_to_f16(-2.0f) == 0xc000);
    CHECK(lt_f32_to_f16(65504.0f) == 0x7bff);
    CHECK(lt_f32_to_f16(65520.0f) == 0x7c00);
    CHECK(lt_f32_to_f16(5.960464477539063e-08f) == 0x0001); /* smallest subnormal */
    CHECK(lt_f32_to_f16(2.9e-08f) == 0x0000);
    CHECK(lt_f32_to_f16(1.0009765625f) == 0x3c01);
    CHECK(lt_f32_to_f16(1.00048828125f) == 0x3c00); /* tie to even */
    CHECK(lt_f32_to_f16(1.00146484375f) == 0x3c02); /* tie to even, upward */
    for (uint32_t h = 0; h < 0x7c00; h++) CHECK(lt_f32_to_f16(lt_f16_to_f32((uint16_t)h)) == h);
}

static void test_printable(void) {
    char s[] = "lt-\xf4" "ache\n\t~ \x7f";
    CHECK(lt_str_printable(s) == s);
    CHECK(strcmp(s, "lt-?ache??~ ?") == 0);
}

static void test_escape(void) {
    char out[64];
    CHECK(!strcmp(lt_str_escape("a\x1b[31mb\nc\td\x7f\xc3\xa9", out, sizeof out),
                  "a\\x1b[31mb\\nc\\td\\x7f\xc3\xa9"));
    /* cut at cap, never mid-escape, always terminated */
    CHECK(!strcmp(lt_str_escape("ab\ncd", out, 4), "ab"));
    CHECK(!strcmp(lt_str_escape("abcdef", out, 4), "abc"));
}

/* A second taker of a held lock is refused with the holder's PID; a released or dead holder's
 * lock is free again. */
static void test_lock(void) {
    char path[] = "/tmp/lt_test_lock_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    lt_lock *a = NULL, *b = NULL;
    CHECK_MSG(lt_lock_take(path, "the thing", &a) == 0, "%s", lt_err_msg());
    pid_t child = fork();
    if (child == 0) { /* another process: refused, naming our PID */
        char want[64];
        snprintf(want, sizeof want, "PID %ld", (long)getppid());
        lt_lock *c = NULL;
        int ok = lt_lock_take(path, "the thing", &c) == -1 && c == NULL &&
                 strstr(lt_err_msg(), want) && strstr(lt_err_msg(), "the thing is in use");
        _exit(ok ? 0 : 1);
    }
    int st = 0;
    waitpid(child, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    lt_lock_release(a);
    CHECK(access(path, F_OK) != 0); /* removed on release */
    /* a holder killed by SIGKILL leaves the file, which does not block */
    child = fork();
    if (child == 0) {
        lt_lock *c = NULL;
        if (lt_lock_take(path, "the thing", &c) != 0) _exit(1);
        raise(SIGKILL);
    }
    waitpid(child, &st, 0);
    CHECK(WIFSIGNALED(st));
    CHECK(access(path, F_OK) == 0);
    CHECK_MSG(lt_lock_take(path, "the thing", &b) == 0, "%s", lt_err_msg());
    lt_lock_release(b);
}

/* --pool-memory's sizes: binary suffixes, exact values, and every malformed or out-of-range text
 * refused with the option's name. */
static void test_parse_bytes(void) {
    struct { const char *s; int64_t want; } ok[] = {
        {"1", 1}, {"4096", 4096}, {"64K", 64 << 10}, {"64k", 64 << 10}, {"512M", 512LL << 20},
        {"8G", 8LL << 30}, {"2GiB", 2LL << 30}, {"3gb", 3LL << 30}, {"1T", 1LL << 40},
        {"100B", 100}, {"4611686018427387903", (1LL << 62) - 1}};
    for (size_t k = 0; k < sizeof ok / sizeof ok[0]; k++) {
        int64_t v = -1;
        CHECK_MSG(lt_parse_bytes("pool-memory", ok[k].s, 1, &v) == 0 && v == ok[k].want,
                  "%s -> %lld", ok[k].s, (long long)v);
    }
    const char *bad[] = {"0", "", "-1", "+5", " 5", "5 ", "1.5G", "G", "8X", "8KK", "8iB",
                         "4194304T", "4611686018427387904", "99999999999999999999"};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        int64_t v = -1;
        CHECK_MSG(lt_parse_bytes("pool-memory", bad[k], 1, &v) != 0 && v == -1 &&
                      strstr(lt_err_msg(), "--pool-memory: expected a size"),
                  "'%s' accepted as %lld", bad[k], (long long)v);
    }
}

int main(void) {
    test_parse_bytes();
    test_printable();
    test_escape();
    test_lock();
    test_philox();
    test_sha256();
    test_half();
    CHECK_DONE();
}
