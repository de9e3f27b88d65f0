/* pytriton_torch's own Triton backend (backend name "pytriton_torch").
 *
 * tritonserver loads this library as backends/pytriton_torch/libtriton_pytriton_torch.so and
 * calls it on its own threads (one per model instance). Each instance connects to its worker
 * thread in the user's process over a Unix stream socket and forwards every batch there:
 *
 *   tritonserver --(this library, in the server process)--> worker thread --> infer function
 *
 * The wire is the one pytriton_torch._channel speaks (see _transport.py, _codec.py):
 *   message  = <u32 count><u64 length>*count <frames...>
 *   frame 0  = msgpack header {"t": kind, "id": call id, ...}
 *   tensor   = [name, datatype, shape, frame, offset, nbytes]; frame -1: bytes at offset in the
 *              sender's shared-memory segment (named by the header's "seg"), else a raw frame.
 * Inputs are copied once from Triton's buffers (into this side's segment, or referenced in place
 * as a frame when small and contiguous); outputs once from the worker's frames/segment into
 * Triton's response buffers. Everything that comes from the worker is bounds-checked: a
 * malformed answer fails its batch, never the server.
 *
 * Settings come from pytriton_torch.conf in the model folder (key=value lines, written 0600 by
 * the Python side). Non-decoupled models only (for now).
 *
 * Built with: cc -O2 -shared -fPIC -Wall -Wextra -Werror. The Triton API is declared below
 * (only what is used); its symbols come from libtritonserver.so in the running server.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------------------------------------
 * Limits and small helpers (also compiled alone, -DPTT_PARSER_ONLY, by the fuzz test driver).
 * ------------------------------------------------------------------------------------------- */

#define PTT_INLINE_LIMIT (64 * 1024)      /* tensors up to this size travel as frames */
#define PTT_ALIGN 64                      /* tensor alignment in a segment */
#define PTT_MIN_SEGMENT (1u << 20)
#define PTT_SHRINK_AFTER 8
#define PTT_MAX_DIMS 64
#define PTT_MAX_FRAMES 65536              /* frames in one message from the worker */
#define PTT_MAX_MESSAGE (UINT64_C(1) << 34) /* 16 GiB: bigger lengths are a broken stream */
#define PTT_MAX_DEPTH 32                  /* msgpack nesting skipped at most */
#define PTT_ERRLEN 1024

typedef struct {
    const uint8_t *p;
    const uint8_t *end;
} mp_reader;

enum { MP_NIL, MP_BOOL, MP_INT, MP_UINT, MP_FLOAT, MP_STR, MP_BIN, MP_ARRAY, MP_MAP, MP_EXT };

typedef struct {
    int type;
    uint64_t u;        /* UINT value, BOOL, or a length (STR/BIN/ARRAY/MAP/EXT) */
    int64_t i;         /* INT value */
    const uint8_t *data; /* STR/BIN/EXT bytes (length u), checked to lie inside the buffer */
} mp_obj;

static int mp_take(mp_reader *r, size_t n, const uint8_t **out)
{
    if ((size_t)(r->end - r->p) < n)
        return -1;
    *out = r->p;
    r->p += n;
    return 0;
}

static int mp_be(mp_reader *r, size_t n, uint64_t *out)
{
    const uint8_t *b;
    if (mp_take(r, n, &b))
        return -1;
    uint64_t v = 0;
    for (size_t k = 0; k < n; k++)
        v = (v << 8) | b[k];
    *out = v;
    return 0;
}

/* Reads one item's head; for STR/BIN/EXT also its bytes (bounds-checked). */
static int mp_next(mp_reader *r, mp_obj *o)
{
    const uint8_t *b;
    if (mp_take(r, 1, &b))
        return -1;
    uint8_t c = *b;
    uint64_t v = 0;
    memset(o, 0, sizeof *o);
    if (c <= 0x7f) { o->type = MP_UINT; o->u = c; return 0; }
    if (c >= 0xe0) { o->type = MP_INT; o->i = (int8_t)c; return 0; }
    if ((c & 0xf0) == 0x80) { o->type = MP_MAP; o->u = c & 0x0f; return 0; }
    if ((c & 0xf0) == 0x90) { o->type = MP_ARRAY; o->u = c & 0x0f; return 0; }
    if ((c & 0xe0) == 0xa0) { o->type = MP_STR; o->u = c & 0x1f; goto bytes; }
    switch (c) {
    case 0xc0: o->type = MP_NIL; return 0;
    case 0xc2: case 0xc3: o->type = MP_BOOL; o->u = c == 0xc3; return 0;
    case 0xc4: case 0xc5: case 0xc6:
        o->type = MP_BIN;
        if (mp_be(r, (size_t)1 << (c - 0xc4), &o->u)) return -1;
        goto bytes;
    case 0xd9: case 0xda: case 0xdb:
        o->type = MP_STR;
        if (mp_be(r, (size_t)1 << (c - 0xd9), &o->u)) return -1;
        goto bytes;
    case 0xcc: case 0xcd: case 0xce: case 0xcf:
        o->type = MP_UINT;
        return mp_be(r, (size_t)1 << (c - 0xcc), &o->u);
    case 0xd0: case 0xd1: case 0xd2: case 0xd3: {
        size_t n = (size_t)1 << (c - 0xd0);
        if (mp_be(r, n, &v)) return -1;
        o->type = MP_INT;
        if (n < 8 && (v >> (8 * n - 1)) & 1)
            v |= ~UINT64_C(0) << (8 * n); /* sign-extend */
        memcpy(&o->i, &v, sizeof v);
        return 0;
    }
    case 0xca: o->type = MP_FLOAT; return mp_be(r, 4, &v);
    case 0xcb: o->type = MP_FLOAT; return mp_be(r, 8, &v);
    case 0xdc: o->type = MP_ARRAY; return mp_be(r, 2, &o->u);
    case 0xdd: o->type = MP_ARRAY; return mp_be(r, 4, &o->u);
    case 0xde: o->type = MP_MAP; return mp_be(r, 2, &o->u);
    case 0xdf: o->type = MP_MAP; return mp_be(r, 4, &o->u);
    case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8:
        o->type = MP_EXT; o->u = (uint64_t)1 << (c - 0xd4); o->u += 1; goto bytes;
    case 0xc7: case 0xc8: case 0xc9:
        o->type = MP_EXT;
        if (mp_be(r, (size_t)1 << (c - 0xc7), &o->u)) return -1;
        o->u += 1;
        goto bytes;
    default:
        return -1; /* 0xc1: never used */
    }
bytes:
    if (o->u > (uint64_t)(r->end - r->p))
        return -1;
    o->data = r->p;
    r->p += o->u;
    return 0;
}

static int mp_skip(mp_reader *r, int depth)
{
    mp_obj o;
    if (depth > PTT_MAX_DEPTH || mp_next(r, &o))
        return -1;
    uint64_t items = o.type == MP_ARRAY ? o.u : o.type == MP_MAP ? 2 * o.u : 0;
    if (items > (uint64_t)(r->end - r->p)) /* every item takes at least one byte */
        return -1;
    for (uint64_t k = 0; k < items; k++)
        if (mp_skip(r, depth + 1))
            return -1;
    return 0;
}

static bool mp_is(const mp_obj *o, const char *s)
{
    size_t n = strlen(s);
    return o->type == MP_STR && o->u == n && memcmp(o->data, s, n) == 0;
}

/* A signed integer item (UINT or INT). */
static int mp_int(mp_reader *r, int64_t *out)
{
    mp_obj o;
    if (mp_next(r, &o))
        return -1;
    if (o.type == MP_INT) { *out = o.i; return 0; }
    if (o.type == MP_UINT && o.u <= (uint64_t)INT64_MAX) { *out = (int64_t)o.u; return 0; }
    return -1;
}

/* ---- msgpack writer --------------------------------------------------------------------- */

typedef struct {
    uint8_t *buf;
    size_t len, cap;
    bool failed; /* out of memory: the message is not sent */
} mp_writer;

static void mw_raw(mp_writer *w, const void *data, size_t n)
{
    if (w->failed)
        return;
    if (w->len + n > w->cap) {
        size_t cap = w->cap ? w->cap : 4096;
        while (cap < w->len + n)
            cap *= 2;
        uint8_t *grown = realloc(w->buf, cap);
        if (grown == NULL) { w->failed = true; return; }
        w->buf = grown;
        w->cap = cap;
    }
    memcpy(w->buf + w->len, data, n);
    w->len += n;
}

static void mw_head(mp_writer *w, uint8_t tag, uint64_t v, size_t n)
{
    uint8_t b[9];
    b[0] = tag;
    for (size_t k = 0; k < n; k++)
        b[1 + k] = (uint8_t)(v >> (8 * (n - 1 - k)));
    mw_raw(w, b, 1 + n);
}

static void mw_uint(mp_writer *w, uint64_t v)
{
    if (v <= 0x7f) { uint8_t b = (uint8_t)v; mw_raw(w, &b, 1); }
    else if (v <= 0xff) mw_head(w, 0xcc, v, 1);
    else if (v <= 0xffff) mw_head(w, 0xcd, v, 2);
    else if (v <= 0xffffffffu) mw_head(w, 0xce, v, 4);
    else mw_head(w, 0xcf, v, 8);
}

static void mw_int(mp_writer *w, int64_t v)
{
    if (v >= 0) { mw_uint(w, (uint64_t)v); return; }
    if (v >= -32) { uint8_t b = (uint8_t)(int8_t)v; mw_raw(w, &b, 1); return; }
    uint64_t u;
    memcpy(&u, &v, sizeof u);
    mw_head(w, 0xd3, u, 8);
}

static void mw_container(mp_writer *w, uint8_t fix, uint8_t tag16, uint64_t n)
{
    if (n < 16) { uint8_t b = (uint8_t)(fix | n); mw_raw(w, &b, 1); }
    else if (n <= 0xffff) mw_head(w, tag16, n, 2);
    else mw_head(w, (uint8_t)(tag16 + 1), n, 4);
}

static void mw_array(mp_writer *w, uint64_t n) { mw_container(w, 0x90, 0xdc, n); }
static void mw_map(mp_writer *w, uint64_t n) { mw_container(w, 0x80, 0xde, n); }

static void mw_strn(mp_writer *w, const char *s, size_t n)
{
    if (n < 32) { uint8_t b = (uint8_t)(0xa0 | n); mw_raw(w, &b, 1); }
    else if (n <= 0xff) mw_head(w, 0xd9, n, 1);
    else if (n <= 0xffff) mw_head(w, 0xda, n, 2);
    else mw_head(w, 0xdb, n, 4);
    mw_raw(w, s, n);
}

static void mw_str(mp_writer *w, const char *s) { mw_strn(w, s, strlen(s)); }

/* ---- datatypes (Triton's enum order, TRITONSERVER_DataType) ----------------------------- */

static const char *const DTYPE_NAMES[] = {"INVALID", "BOOL", "UINT8", "UINT16", "UINT32", "UINT64",
                                          "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64",
                                          "BYTES", "BF16"};
static const uint8_t DTYPE_SIZES[] = {0, 1, 1, 2, 4, 8, 1, 2, 4, 8, 2, 4, 8, 0, 2};
#define PTT_DTYPE_BYTES 13
#define PTT_DTYPE_COUNT 15

static int dtype_from_name(const uint8_t *s, uint64_t n)
{
    for (int k = 1; k < PTT_DTYPE_COUNT; k++)
        if (strlen(DTYPE_NAMES[k]) == n && memcmp(DTYPE_NAMES[k], s, n) == 0)
            return k;
    return 0;
}

/* ---- the worker's answer ---------------------------------------------------------------- */

typedef struct {
    const uint8_t *name;
    uint32_t name_len;
    int dtype;
    uint32_t ndims;
    int64_t shape[PTT_MAX_DIMS];
    int64_t frame;   /* -1: in the segment */
    uint64_t offset; /* segment tensors */
    uint64_t nbytes;
} ptt_tensor;

typedef struct {
    char kind[16];
    int64_t id;
    const uint8_t *msg; /* "err" */
    uint32_t msg_len;
    const uint8_t *seg; /* segment name, may be empty */
    uint32_t seg_len;
    uint32_t groups;      /* response groups (one per request) */
    uint32_t *group_start; /* index of each group's first tensor in `tensors`, groups + 1 entries */
    ptt_tensor *tensors;
    uint32_t ntensors;
} ptt_answer;

static void answer_free(ptt_answer *a)
{
    free(a->group_start);
    free(a->tensors);
    memset(a, 0, sizeof *a);
}

static int fail_msg(char *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail_msg(char *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, PTT_ERRLEN, fmt, ap);
    va_end(ap);
    for (char *c = err; *c; c++) /* names from the worker may hold any byte: keep the text printable */
        if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7f)
            *c = '?';
    return -1;
}

/* BYTES content: `count` elements, each <u32 little-endian length><bytes>, filling `n` exactly. */
static int check_bytes_content(const uint8_t *data, uint64_t n, uint64_t count)
{
    uint64_t pos = 0;
    for (uint64_t k = 0; k < count; k++) {
        if (n - pos < 4)
            return -1;
        uint32_t len = (uint32_t)data[pos] | (uint32_t)data[pos + 1] << 8 | (uint32_t)data[pos + 2] << 16 |
                       (uint32_t)data[pos + 3] << 24;
        pos += 4;
        if (n - pos < len)
            return -1;
        pos += len;
    }
    return pos == n ? 0 : -1;
}

static int parse_tensor(mp_reader *r, ptt_tensor *t, char *err)
{
    mp_obj o;
    if (mp_next(r, &o) || o.type != MP_ARRAY || o.u != 6)
        return fail_msg(err, "a tensor descriptor is not a list of 6 items");
    if (mp_next(r, &o) || o.type != MP_STR || o.u == 0 || o.u > 4096)
        return fail_msg(err, "a tensor name is not a string of 1 to 4096 bytes");
    if (memchr(o.data, 0, o.u) != NULL)
        return fail_msg(err, "a tensor name holds a NUL byte");
    t->name = o.data;
    t->name_len = (uint32_t)o.u;
    if (mp_next(r, &o) || o.type != MP_STR || (t->dtype = dtype_from_name(o.data, o.u)) == 0)
        return fail_msg(err, "tensor '%.*s': unknown datatype", (int)t->name_len, t->name);
    if (mp_next(r, &o) || o.type != MP_ARRAY || o.u > PTT_MAX_DIMS)
        return fail_msg(err, "tensor '%.*s': the shape is not a list of at most %d sizes",
                        (int)t->name_len, t->name, PTT_MAX_DIMS);
    t->ndims = (uint32_t)o.u;
    for (uint32_t k = 0; k < t->ndims; k++)
        if (mp_int(r, &t->shape[k]) || t->shape[k] < 0)
            return fail_msg(err, "tensor '%.*s': a shape entry is not a size >= 0", (int)t->name_len, t->name);
    int64_t offset, nbytes;
    if (mp_int(r, &t->frame) || t->frame < -1)
        return fail_msg(err, "tensor '%.*s': bad frame index", (int)t->name_len, t->name);
    if (mp_int(r, &offset) || offset < 0 || mp_int(r, &nbytes) || nbytes < 0)
        return fail_msg(err, "tensor '%.*s': bad offset or size", (int)t->name_len, t->name);
    t->offset = (uint64_t)offset;
    t->nbytes = (uint64_t)nbytes;
    return 0;
}

static int parse_responses(mp_reader *r, ptt_answer *a, char *err)
{
    mp_obj o;
    if (mp_next(r, &o) || o.type != MP_ARRAY)
        return fail_msg(err, "'resps' is not a list");
    if (o.u > (uint64_t)(r->end - r->p) || o.u > UINT32_MAX - 1)
        return fail_msg(err, "'resps' is longer than the message");
    a->groups = (uint32_t)o.u;
    a->group_start = calloc((size_t)a->groups + 1, sizeof *a->group_start);
    if (a->group_start == NULL)
        return fail_msg(err, "out of memory");
    size_t cap = 0;
    for (uint32_t g = 0; g < a->groups; g++) {
        a->group_start[g] = a->ntensors;
        if (mp_next(r, &o) || o.type != MP_ARRAY)
            return fail_msg(err, "response %u is not a list of tensors", g);
        if (o.u > (uint64_t)(r->end - r->p))
            return fail_msg(err, "response %u is longer than the message", g);
        for (uint64_t k = 0; k < o.u; k++) {
            if (a->ntensors == cap) {
                size_t grown = cap ? 2 * cap : 16;
                ptt_tensor *more = realloc(a->tensors, grown * sizeof *more);
                if (more == NULL)
                    return fail_msg(err, "out of memory");
                a->tensors = more;
                cap = grown;
            }
            if (parse_tensor(r, &a->tensors[a->ntensors], err))
                return -1;
            a->ntensors++;
        }
    }
    a->group_start[a->groups] = a->ntensors;
    return 0;
}

/* Parses a header from the worker. Returns 0, or -1 with `err` set. */
static int parse_answer(const uint8_t *buf, size_t len, ptt_answer *a, char *err)
{
    memset(a, 0, sizeof *a);
    mp_reader r = {buf, buf + len};
    mp_obj o, key;
    bool have_id = false;
    if (mp_next(&r, &o) || o.type != MP_MAP)
        return fail_msg(err, "the header is not a map");
    uint64_t entries = o.u;
    for (uint64_t k = 0; k < entries; k++) {
        if (mp_next(&r, &key))
            return fail_msg(err, "truncated header");
        if (mp_is(&key, "t")) {
            if (mp_next(&r, &o) || o.type != MP_STR || o.u >= sizeof a->kind)
                return fail_msg(err, "'t' is not a short string");
            for (uint64_t c = 0; c < o.u; c++)
                if (o.data[c] < 'a' || o.data[c] > 'z')
                    return fail_msg(err, "'t' is not a message kind");
            memcpy(a->kind, o.data, o.u);
            a->kind[o.u] = 0;
        } else if (mp_is(&key, "id")) {
            if (mp_int(&r, &a->id))
                return fail_msg(err, "'id' is not an integer");
            have_id = true;
        } else if (mp_is(&key, "msg")) {
            if (mp_next(&r, &o) || o.type != MP_STR || o.u > UINT32_MAX)
                return fail_msg(err, "'msg' is not a string");
            a->msg = o.data;
            a->msg_len = (uint32_t)o.u;
        } else if (mp_is(&key, "seg")) {
            if (mp_next(&r, &o) || (o.type != MP_STR && o.type != MP_NIL) || o.u > 200)
                return fail_msg(err, "'seg' is not a segment name");
            a->seg = o.data;
            a->seg_len = (uint32_t)o.u;
        } else if (mp_is(&key, "resps")) {
            if (a->group_start != NULL)
                return fail_msg(err, "'resps' appears twice");
            if (parse_responses(&r, a, err))
                return -1;
        } else if (mp_skip(&r, 0)) {
            return fail_msg(err, "truncated header");
        }
    }
    if (!a->kind[0] || !have_id)
        return fail_msg(err, "the header has no 't' or 'id'");
    return 0;
}

/* Checks every tensor of an "ok" answer against the message it came with: frames exist and hold
 * the tensor's bytes, segment ranges lie inside the mapped segment, sizes match shapes, BYTES
 * contents are well formed. `frame_len` has `nframes` entries (frames after the header). */
static int check_answer(const ptt_answer *a, uint32_t expected_groups, const uint8_t *const *frame_data,
                        const uint64_t *frame_len, uint64_t nframes, const uint8_t *seg_data,
                        uint64_t seg_size, char *err)
{
    if (a->groups != expected_groups)
        return fail_msg(err, "%u responses for %u requests", a->groups, expected_groups);
    for (uint32_t k = 0; k < a->ntensors; k++) {
        const ptt_tensor *t = &a->tensors[k];
        const uint8_t *data;
        if (t->frame >= 0) {
            if ((uint64_t)t->frame >= nframes)
                return fail_msg(err, "tensor '%.*s': frame %lld does not exist", (int)t->name_len, t->name,
                                (long long)t->frame);
            if (frame_len[t->frame] != t->nbytes)
                return fail_msg(err, "tensor '%.*s': its frame holds %llu bytes, not %llu", (int)t->name_len,
                                t->name, (unsigned long long)frame_len[t->frame],
                                (unsigned long long)t->nbytes);
            data = frame_data[t->frame];
        } else {
            if (seg_data == NULL)
                return fail_msg(err, "tensor '%.*s' is in shared memory but no segment is mapped",
                                (int)t->name_len, t->name);
            if (t->offset > seg_size || t->nbytes > seg_size - t->offset)
                return fail_msg(err, "tensor '%.*s': bytes %llu..+%llu lie outside the %llu-byte segment",
                                (int)t->name_len, t->name, (unsigned long long)t->offset,
                                (unsigned long long)t->nbytes, (unsigned long long)seg_size);
            data = seg_data + t->offset;
        }
        uint64_t count = 1;
        for (uint32_t d = 0; d < t->ndims; d++) {
            uint64_t dim = (uint64_t)t->shape[d];
            if (dim && count > UINT64_MAX / dim)
                return fail_msg(err, "tensor '%.*s': the shape overflows", (int)t->name_len, t->name);
            count *= dim;
        }
        if (t->dtype == PTT_DTYPE_BYTES) {
            if (check_bytes_content(data, t->nbytes, count))
                return fail_msg(err, "tensor '%.*s': malformed BYTES content", (int)t->name_len, t->name);
        } else if (count > UINT64_MAX / DTYPE_SIZES[t->dtype] || count * DTYPE_SIZES[t->dtype] != t->nbytes) {
            return fail_msg(err, "tensor '%.*s': %llu bytes do not match its shape and datatype %s",
                            (int)t->name_len, t->name, (unsigned long long)t->nbytes, DTYPE_NAMES[t->dtype]);
        }
    }
    return 0;
}

/* Splits a received message body (after reading it whole) into frames. */
static int split_frames(const uint8_t *msg, uint64_t len, uint64_t *count, const uint8_t **data,
                        uint64_t *lengths, uint64_t max_frames, char *err)
{
    if (len < 4)
        return fail_msg(err, "message shorter than its frame count");
    uint32_t n;
    memcpy(&n, msg, 4);
    if (n == 0 || n > max_frames)
        return fail_msg(err, "message with %u frames", n);
    uint64_t pos = 4 + 8 * (uint64_t)n;
    if (pos > len)
        return fail_msg(err, "message shorter than its frame table");
    for (uint32_t k = 0; k < n; k++) {
        uint64_t l;
        memcpy(&l, msg + 4 + 8 * (uint64_t)k, 8);
        if (l > len - pos)
            return fail_msg(err, "frame %u runs past the message", k);
        data[k] = msg + pos;
        lengths[k] = l;
        pos += l;
    }
    if (pos != len)
        return fail_msg(err, "message longer than its frames");
    *count = n;
    return 0;
}

#ifndef PTT_PARSER_ONLY

/* ---------------------------------------------------------------------------------------------
 * Triton C API: the declarations this backend uses (tritonbackend.h / tritonserver.h, API 1.19).
 * ------------------------------------------------------------------------------------------- */

#define PTT_API_MAJOR 1
#define PTT_API_MINOR 19

typedef struct TRITONSERVER_Error TRITONSERVER_Error;
typedef struct TRITONBACKEND_Backend TRITONBACKEND_Backend;
typedef struct TRITONBACKEND_Model TRITONBACKEND_Model;
typedef struct TRITONBACKEND_ModelInstance TRITONBACKEND_ModelInstance;
typedef struct TRITONBACKEND_Request TRITONBACKEND_Request;
typedef struct TRITONBACKEND_Input TRITONBACKEND_Input;
typedef struct TRITONBACKEND_Response TRITONBACKEND_Response;
typedef struct TRITONBACKEND_Output TRITONBACKEND_Output;
typedef int TRITONSERVER_DataType;       /* enum: DTYPE_NAMES order */
typedef int TRITONSERVER_MemoryType;     /* enum */
typedef int TRITONSERVER_ParameterType;  /* enum */
typedef int TRITONBACKEND_ArtifactType;  /* enum */
typedef int TRITONSERVER_Error_Code;     /* enum */
typedef int TRITONSERVER_LogLevel;       /* enum */

enum { TRITONSERVER_MEMORY_CPU = 0 };
enum { TRITONSERVER_PARAMETER_STRING = 0, TRITONSERVER_PARAMETER_INT = 1, TRITONSERVER_PARAMETER_BOOL = 2,
       TRITONSERVER_PARAMETER_DOUBLE = 3 };
enum { TRITONSERVER_ERROR_UNKNOWN = 0, TRITONSERVER_ERROR_INTERNAL = 1, TRITONSERVER_ERROR_INVALID_ARG = 3,
       TRITONSERVER_ERROR_UNAVAILABLE = 4, TRITONSERVER_ERROR_UNSUPPORTED = 5 };
enum { TRITONSERVER_LOG_INFO = 0, TRITONSERVER_LOG_WARN = 1, TRITONSERVER_LOG_ERROR = 2 };
enum { TRITONBACKEND_ARTIFACT_FILESYSTEM = 0 };
enum { TRITONSERVER_REQUEST_RELEASE_ALL = 1 };
enum { TRITONSERVER_RESPONSE_COMPLETE_FINAL = 1 };

TRITONSERVER_Error *TRITONSERVER_ErrorNew(TRITONSERVER_Error_Code code, const char *msg);
void TRITONSERVER_ErrorDelete(TRITONSERVER_Error *error);
const char *TRITONSERVER_ErrorMessage(TRITONSERVER_Error *error);
TRITONSERVER_Error *TRITONSERVER_LogMessage(TRITONSERVER_LogLevel level, const char *filename, const int line,
                                            const char *msg);
TRITONSERVER_Error *TRITONBACKEND_ApiVersion(uint32_t *major, uint32_t *minor);
TRITONSERVER_Error *TRITONBACKEND_ModelName(TRITONBACKEND_Model *model, const char **name);
TRITONSERVER_Error *TRITONBACKEND_ModelRepository(TRITONBACKEND_Model *model,
                                                  TRITONBACKEND_ArtifactType *artifact_type,
                                                  const char **location);
TRITONSERVER_Error *TRITONBACKEND_ModelSetState(TRITONBACKEND_Model *model, void *state);
TRITONSERVER_Error *TRITONBACKEND_ModelState(TRITONBACKEND_Model *model, void **state);
TRITONSERVER_Error *TRITONBACKEND_ModelInstanceModel(TRITONBACKEND_ModelInstance *instance,
                                                     TRITONBACKEND_Model **model);
TRITONSERVER_Error *TRITONBACKEND_ModelInstanceName(TRITONBACKEND_ModelInstance *instance, const char **name);
TRITONSERVER_Error *TRITONBACKEND_ModelInstanceSetState(TRITONBACKEND_ModelInstance *instance, void *state);
TRITONSERVER_Error *TRITONBACKEND_ModelInstanceState(TRITONBACKEND_ModelInstance *instance, void **state);
TRITONSERVER_Error *TRITONBACKEND_ModelInstanceReportStatistics(TRITONBACKEND_ModelInstance *instance,
                                                                TRITONBACKEND_Request *request,
                                                                const bool success, const uint64_t exec_start_ns,
                                                                const uint64_t compute_start_ns,
                                                                const uint64_t compute_end_ns,
                                                                const uint64_t exec_end_ns);
TRITONSERVER_Error *TRITONBACKEND_ModelInstanceReportBatchStatistics(TRITONBACKEND_ModelInstance *instance,
                                                                     const uint64_t batch_size,
                                                                     const uint64_t exec_start_ns,
                                                                     const uint64_t compute_start_ns,
                                                                     const uint64_t compute_end_ns,
                                                                     const uint64_t exec_end_ns);
TRITONSERVER_Error *TRITONBACKEND_RequestId(TRITONBACKEND_Request *request, const char **id);
TRITONSERVER_Error *TRITONBACKEND_RequestInputCount(TRITONBACKEND_Request *request, uint32_t *count);
TRITONSERVER_Error *TRITONBACKEND_RequestInputByIndex(TRITONBACKEND_Request *request, const uint32_t index,
                                                      TRITONBACKEND_Input **input);
TRITONSERVER_Error *TRITONBACKEND_InputProperties(TRITONBACKEND_Input *input, const char **name,
                                                  TRITONSERVER_DataType *datatype, const int64_t **shape,
                                                  uint32_t *dims_count, uint64_t *byte_size,
                                                  uint32_t *buffer_count);
TRITONSERVER_Error *TRITONBACKEND_InputBuffer(TRITONBACKEND_Input *input, const uint32_t index,
                                              const void **buffer, uint64_t *buffer_byte_size,
                                              TRITONSERVER_MemoryType *memory_type, int64_t *memory_type_id);
TRITONSERVER_Error *TRITONBACKEND_RequestOutputCount(TRITONBACKEND_Request *request, uint32_t *count);
TRITONSERVER_Error *TRITONBACKEND_RequestOutputName(TRITONBACKEND_Request *request, const uint32_t index,
                                                    const char **output_name);
TRITONSERVER_Error *TRITONBACKEND_RequestParameterCount(TRITONBACKEND_Request *request, uint32_t *count);
TRITONSERVER_Error *TRITONBACKEND_RequestParameter(TRITONBACKEND_Request *request, const uint32_t index,
                                                   const char **key, TRITONSERVER_ParameterType *type,
                                                   const void **vvalue);
TRITONSERVER_Error *TRITONBACKEND_RequestRelease(TRITONBACKEND_Request *request, uint32_t release_flags);
TRITONSERVER_Error *TRITONBACKEND_ResponseNew(TRITONBACKEND_Response **response, TRITONBACKEND_Request *request);
TRITONSERVER_Error *TRITONBACKEND_ResponseDelete(TRITONBACKEND_Response *response);
TRITONSERVER_Error *TRITONBACKEND_ResponseOutput(TRITONBACKEND_Response *response, TRITONBACKEND_Output **output,
                                                 const char *name, const TRITONSERVER_DataType datatype,
                                                 const int64_t *shape, const uint32_t dims_count);
TRITONSERVER_Error *TRITONBACKEND_OutputBuffer(TRITONBACKEND_Output *output, void **buffer,
                                               const uint64_t buffer_byte_size,
                                               TRITONSERVER_MemoryType *memory_type, int64_t *memory_type_id);
TRITONSERVER_Error *TRITONBACKEND_ResponseSend(TRITONBACKEND_Response *response, const uint32_t send_flags,
                                               TRITONSERVER_Error *error);

#define EXPORT __attribute__((visibility("default")))

static void logf_(TRITONSERVER_LogLevel level, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void logf_(TRITONSERVER_LogLevel level, int line, const char *fmt, ...)
{
    char text[PTT_ERRLEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    TRITONSERVER_Error *e = TRITONSERVER_LogMessage(level, __FILE__, line, text);
    if (e != NULL)
        TRITONSERVER_ErrorDelete(e);
}
#define LOG(level, ...) logf_(level, __LINE__, __VA_ARGS__)

static TRITONSERVER_Error *errorf(TRITONSERVER_Error_Code code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static TRITONSERVER_Error *errorf(TRITONSERVER_Error_Code code, const char *fmt, ...)
{
    char text[PTT_ERRLEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    return TRITONSERVER_ErrorNew(code, text);
}

/* Copies an error's message into `out` and deletes the error; returns whether there was one. */
static bool take_error(TRITONSERVER_Error *e, char *out, const char *what)
{
    if (e == NULL)
        return false;
    snprintf(out, PTT_ERRLEN, "%.200s: %.700s", what, TRITONSERVER_ErrorMessage(e));
    TRITONSERVER_ErrorDelete(e);
    return true;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Whether `pid` runs; a zombie (exited, not yet reaped) counts as gone. */
static bool pid_alive(long pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return false;
    buf[n] = 0;
    char *paren = strrchr(buf, ')');
    return paren == NULL || paren[1] == 0 || paren[2] != 'Z';
}

/* ---- settings ---------------------------------------------------------------------------- */

typedef struct {
    char name[256];            /* the model's name */
    char endpoint[128];        /* socket path without ".<instance>" */
    char shm_prefix[160];
    long owner_pid;
    double connect_timeout_s;
    double infer_timeout_s;    /* 0: none */
    uint64_t max_input_bytes;  /* 0: none */
    double spin_us;
} model_state;

static int copy_value(char *dst, size_t size, const char *value)
{
    if (strlen(value) >= size)
        return -1;
    strcpy(dst, value);
    return 0;
}

static TRITONSERVER_Error *read_settings(model_state *m, const char *folder)
{
    char path[PATH_MAX];
    if ((size_t)snprintf(path, sizeof path, "%s/pytriton_torch.conf", folder) >= sizeof path)
        return errorf(TRITONSERVER_ERROR_INVALID_ARG, "model folder path too long: %s", folder);
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return errorf(TRITONSERVER_ERROR_INVALID_ARG, "model '%s': cannot read %s: %s", m->name, path,
                      strerror(errno));
    char line[1024];
    int seen = 0;
    TRITONSERVER_Error *err = NULL;
    m->connect_timeout_s = 60;
    while (err == NULL && fgets(line, sizeof line, f) != NULL) {
        line[strcspn(line, "\n")] = 0;
        char *eq = strchr(line, '=');
        if (eq == NULL || line[0] == '#')
            continue;
        *eq = 0;
        const char *key = line, *value = eq + 1;
        char *end = NULL;
        int bad = 0;
        errno = 0;
        if (strcmp(key, "endpoint") == 0) {
            bad = copy_value(m->endpoint, sizeof m->endpoint, value);
            seen |= 1;
        } else if (strcmp(key, "shm_prefix") == 0) {
            bad = copy_value(m->shm_prefix, sizeof m->shm_prefix, value) || strchr(value, '/') != NULL;
            seen |= 2;
        } else if (strcmp(key, "owner_pid") == 0) {
            m->owner_pid = strtol(value, &end, 10);
            bad = m->owner_pid <= 0;
            seen |= 4;
        } else if (strcmp(key, "connect_timeout_s") == 0) {
            m->connect_timeout_s = strtod(value, &end);
        } else if (strcmp(key, "infer_timeout_s") == 0) {
            m->infer_timeout_s = strtod(value, &end);
        } else if (strcmp(key, "max_input_bytes") == 0) {
            m->max_input_bytes = strtoull(value, &end, 10);
        } else if (strcmp(key, "spin_us") == 0) {
            m->spin_us = strtod(value, &end);
        }
        if (bad || errno || (end != NULL && (*end != 0 || end == value)))
            err = errorf(TRITONSERVER_ERROR_INVALID_ARG, "model '%s': bad setting %s=%s in %s", m->name, key,
                         value, path);
    }
    fclose(f);
    if (err == NULL && seen != 7)
        err = errorf(TRITONSERVER_ERROR_INVALID_ARG,
                     "model '%s': %s lacks endpoint, shm_prefix or owner_pid", m->name, path);
    return err;
}

/* ---- shared memory ---------------------------------------------------------------------- */

typedef struct {         /* this side's segment for request tensors */
    char name[256];
    uint8_t *data;
    uint64_t size, used;
    unsigned generation;
    uint64_t recent[PTT_SHRINK_AFTER];
    unsigned nrecent;
} shm_writer;

typedef struct {         /* the worker's segment, mapped read-only */
    char name[256];
    int fd;
    const uint8_t *data;
    uint64_t size;
} shm_reader;

static void writer_release(shm_writer *w)
{
    if (w->data != NULL) {
        munmap(w->data, w->size);
        char path[300];
        snprintf(path, sizeof path, "/dev/shm/%s", w->name);
        unlink(path);
    }
    w->data = NULL;
    w->name[0] = 0;
    w->size = 0;
}

static uint64_t segment_size(uint64_t needed)
{
    uint64_t size = PTT_MIN_SEGMENT;
    while (size < needed)
        size *= 2;
    return size;
}

static int writer_replace(shm_writer *w, const char *prefix, uint64_t size, char *err)
{
    char name[256], path[300];
    w->generation++;
    if ((size_t)snprintf(name, sizeof name, "%s-%u", prefix, w->generation) >= sizeof name)
        return fail_msg(err, "segment name too long");
    snprintf(path, sizeof path, "/dev/shm/%s", name);
    int fd = open(path, O_CREAT | O_EXCL | O_RDWR | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return fail_msg(err, "cannot create shared memory %s: %s", path, strerror(errno));
    void *data = MAP_FAILED;
    if (fchmod(fd, 0600) == 0 && ftruncate(fd, (off_t)size) == 0)
        data = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    int saved = errno;
    close(fd);
    if (data == MAP_FAILED) {
        unlink(path);
        return fail_msg(err, "cannot size shared memory %s to %llu bytes: %s", path, (unsigned long long)size,
                        strerror(saved));
    }
    writer_release(w);
    w->data = data;
    w->size = size;
    strcpy(w->name, name);
    return 0;
}

/* Starts a message needing `needed` bytes: grows, or shrinks after a run of smaller messages. */
static int writer_reset(shm_writer *w, const char *prefix, uint64_t needed, char *err)
{
    w->used = 0;
    w->recent[w->nrecent++ % PTT_SHRINK_AFTER] = needed;
    if (needed > w->size)
        return writer_replace(w, prefix, segment_size(needed), err);
    if (w->size > PTT_MIN_SEGMENT && w->nrecent >= PTT_SHRINK_AFTER) {
        uint64_t largest = 0;
        for (int k = 0; k < PTT_SHRINK_AFTER; k++)
            largest = w->recent[k] > largest ? w->recent[k] : largest;
        if (largest == 0)
            writer_release(w);
        else if (segment_size(largest) < w->size)
            return writer_replace(w, prefix, segment_size(largest), err);
    }
    return 0;
}

static void reader_release(shm_reader *r)
{
    if (r->data != NULL)
        munmap((void *)r->data, r->size);
    if (r->fd >= 0)
        close(r->fd);
    r->data = NULL;
    r->fd = -1;
    r->size = 0;
    r->name[0] = 0;
}

/* Maps the worker's segment `name` (kept mapped while the worker names it). */
static int reader_map(shm_reader *r, const uint8_t *name, uint32_t len, char *err)
{
    if (len == 0) {
        reader_release(r);
        return 0;
    }
    if (len >= sizeof r->name || memchr(name, '/', len) != NULL || memchr(name, 0, len) != NULL ||
        (len <= 2 && name[0] == '.'))
        return fail_msg(err, "bad segment name");
    if (r->data != NULL && strlen(r->name) == len && memcmp(r->name, name, len) == 0) {
        struct stat st; /* a segment that shrank under us would fault on access: check first */
        if (fstat(r->fd, &st) == 0 && (uint64_t)st.st_size >= r->size)
            return 0;
        reader_release(r);
        return fail_msg(err, "the worker's segment shrank");
    }
    reader_release(r);
    char path[300];
    snprintf(path, sizeof path, "/dev/shm/%.*s", (int)len, (const char *)name);
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    if (fd < 0)
        return fail_msg(err, "cannot open the worker's segment %s: %s", path, strerror(errno));
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size <= 0) {
        close(fd);
        return fail_msg(err, "the worker's segment %s is not a shared-memory file", path);
    }
    void *data = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    if (data == MAP_FAILED) {
        close(fd);
        return fail_msg(err, "cannot map %s: %s", path, strerror(errno));
    }
    r->fd = fd;
    r->data = data;
    r->size = (uint64_t)st.st_size;
    memcpy(r->name, name, len);
    r->name[len] = 0;
    return 0;
}

/* ---- socket ----------------------------------------------------------------------------- */

typedef struct {
    model_state *model;
    TRITONBACKEND_ModelInstance *triton;
    int index;
    int fd;
    int64_t next_id;
    char socket_path[160];
    char shm_prefix[256];
    shm_writer writer;
    shm_reader reader;
    mp_writer header;
    uint8_t *inbox;          /* the last message received */
    uint64_t inbox_cap;
    uint8_t *scratch;        /* inline tensors gathered from several Triton buffers */
    uint64_t scratch_cap;
    const uint8_t **frame_data; /* frames of the last message received (PTT_MAX_FRAMES entries) */
    uint64_t *frame_len;
    mp_writer json;          /* a request's parameters */
} instance_state;

/* Waits until the socket is readable (spinning briefly first), the deadline passes (0: none), or
 * the owner dies. Returns 1 readable, 0 timed out, -1 error (`err` set). */
static int wait_readable(instance_state *s, uint64_t deadline, double spin_us, char *err)
{
    struct pollfd p = {s->fd, POLLIN, 0};
    if (spin_us > 0) {
        uint64_t until = now_ns() + (uint64_t)(spin_us * 1000);
        do {
            if (poll(&p, 1, 0) > 0)
                return 1;
            sched_yield();
        } while (now_ns() < until);
    }
    for (;;) {
        int slice = 200;
        if (deadline) {
            uint64_t now = now_ns();
            if (now >= deadline)
                return 0;
            uint64_t left_ms = (deadline - now) / 1000000 + 1;
            slice = left_ms < 200 ? (int)left_ms : 200;
        }
        int n = poll(&p, 1, slice);
        if (n > 0)
            return 1;
        if (n < 0 && errno != EINTR)
            return fail_msg(err, "poll: %s", strerror(errno));
        if (!pid_alive(s->model->owner_pid))
            return fail_msg(err, "the process serving model '%s' has exited", s->model->name);
    }
}

static void instance_free(instance_state *s)
{
    if (s->fd >= 0)
        close(s->fd);
    writer_release(&s->writer);
    reader_release(&s->reader);
    free(s->header.buf);
    free(s->json.buf);
    free(s->inbox);
    free(s->scratch);
    free(s->frame_data);
    free(s->frame_len);
    free(s);
}

static void disconnect(instance_state *s)
{
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
}

static int read_exact(instance_state *s, uint8_t *buf, uint64_t n, uint64_t deadline, char *err)
{
    while (n) {
        ssize_t got = recv(s->fd, buf, n > (1u << 30) ? (1u << 30) : n, MSG_DONTWAIT);
        if (got > 0) {
            buf += got;
            n -= (uint64_t)got;
            continue;
        }
        if (got == 0)
            return fail_msg(err, pid_alive(s->model->owner_pid) ? "the worker of model '%s' closed its connection"
                                                                 : "the process serving model '%s' has exited",
                            s->model->name);
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return fail_msg(err, "reading from the worker of model '%s': %s", s->model->name, strerror(errno));
        int ready = wait_readable(s, deadline, 0, err);
        if (ready < 0)
            return -1;
        if (ready == 0)
            return fail_msg(err, "model '%s': the worker stopped in the middle of a message", s->model->name);
    }
    return 0;
}

/* Receives one whole message into s->inbox; returns its total length or -1. A framing error
 * leaves the stream unusable: the caller disconnects. */
static int64_t recv_message(instance_state *s, uint64_t deadline, char *err)
{
    uint8_t head[4];
    if (read_exact(s, head, 4, deadline, err))
        return -1;
    uint32_t count;
    memcpy(&count, head, 4);
    if (count == 0 || count > PTT_MAX_FRAMES)
        return fail_msg(err, "model '%s': the worker sent a message with %u frames", s->model->name, count);
    uint64_t table = 4 + 8 * (uint64_t)count;
    uint8_t *lengths = malloc(table);
    if (lengths == NULL)
        return fail_msg(err, "out of memory");
    memcpy(lengths, head, 4);
    if (read_exact(s, lengths + 4, table - 4, deadline, err)) {
        free(lengths);
        return -1;
    }
    uint64_t total = table;
    for (uint32_t k = 0; k < count; k++) {
        uint64_t l;
        memcpy(&l, lengths + 4 + 8 * (uint64_t)k, 8);
        if (l > PTT_MAX_MESSAGE || total + l > PTT_MAX_MESSAGE) {
            free(lengths);
            return fail_msg(err, "model '%s': the worker sent a frame of %llu bytes", s->model->name,
                            (unsigned long long)l);
        }
        total += l;
    }
    if (total > s->inbox_cap) {
        uint8_t *grown = realloc(s->inbox, total);
        if (grown == NULL) {
            free(lengths);
            return fail_msg(err, "out of memory for a %llu-byte message", (unsigned long long)total);
        }
        s->inbox = grown;
        s->inbox_cap = total;
    }
    memcpy(s->inbox, lengths, table);
    free(lengths);
    if (read_exact(s, s->inbox + table, total - table, deadline, err))
        return -1;
    return (int64_t)total;
}

static int send_all(instance_state *s, struct iovec *iov, int iovcnt, char *err)
{
    while (iovcnt > 0) {
        struct msghdr msg = {0};
        msg.msg_iov = iov;
        msg.msg_iovlen = (size_t)(iovcnt > 1024 ? 1024 : iovcnt);
        ssize_t sent = sendmsg(s->fd, &msg, MSG_NOSIGNAL);
        if (sent < 0) {
            if (errno == EINTR)
                continue;
            return fail_msg(err, pid_alive(s->model->owner_pid)
                                     ? "model '%s': cannot send to the worker: %s"
                                     : "the process serving model '%s' has exited (%s)",
                            s->model->name, strerror(errno));
        }
        while (iovcnt > 0 && (size_t)sent >= iov->iov_len) {
            sent -= (ssize_t)iov->iov_len;
            iov++;
            iovcnt--;
        }
        if (iovcnt > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + sent;
            iov->iov_len -= (size_t)sent;
        }
    }
    return 0;
}

/* Sends [header, frames...] framed as <u32 count><u64 length>*count. */
static int send_message(instance_state *s, const uint8_t *header, size_t header_len, struct iovec *frames,
                        uint32_t nframes, char *err)
{
    uint32_t count = nframes + 1;
    size_t table_len = 4 + 8 * (size_t)count;
    uint8_t *table = malloc(table_len);
    struct iovec *iov = malloc(sizeof *iov * (count + 1));
    int rc = -1;
    if (table == NULL || iov == NULL) {
        fail_msg(err, "out of memory");
        goto out;
    }
    memcpy(table, &count, 4);
    uint64_t l = header_len;
    memcpy(table + 4, &l, 8);
    iov[0].iov_base = table;
    iov[0].iov_len = table_len;
    iov[1].iov_base = (void *)header;
    iov[1].iov_len = header_len;
    for (uint32_t k = 0; k < nframes; k++) {
        l = frames[k].iov_len;
        memcpy(table + 4 + 8 * (size_t)(k + 1), &l, 8);
        iov[k + 2] = frames[k];
    }
    rc = send_all(s, iov, (int)count + 1, err);
out:
    free(table);
    free(iov);
    return rc;
}

/* Waits for the answer to `id` (answers to earlier, timed-out calls are dropped). On success the
 * answer's header is parsed into `a`; frames follow in s->inbox. Returns 0, or -1 with `err`. */
static int receive_answer(instance_state *s, int64_t id, double timeout_s, ptt_answer *a, const uint8_t **frame_data,
                          uint64_t *frame_len, uint64_t *nframes, char *err)
{
    uint64_t deadline = timeout_s > 0 ? now_ns() + (uint64_t)(timeout_s * 1e9) : 0;
    for (;;) {
        memset(a, 0, sizeof *a);
        int ready = wait_readable(s, deadline, s->model->spin_us, err);
        if (ready < 0)
            return -1;
        if (ready == 0)
            return fail_msg(err, "model '%s': no answer from the infer function within %gs", s->model->name,
                            timeout_s);
        int64_t total = recv_message(s, deadline, err);
        if (total < 0) {
            disconnect(s);
            return -1;
        }
        if (split_frames(s->inbox, (uint64_t)total, nframes, frame_data, frame_len, PTT_MAX_FRAMES, err) ||
            parse_answer(frame_data[0], frame_len[0], a, err)) {
            answer_free(a);
            char detail[PTT_ERRLEN];
            snprintf(detail, sizeof detail, "%s", err);
            return fail_msg(err, "model '%s': malformed answer from the worker: %s", s->model->name, detail);
        }
        if (a->id == id)
            return 0;
        answer_free(a);
    }
}

static int connect_worker(instance_state *s, double timeout_s, char *err)
{
    uint64_t deadline = now_ns() + (uint64_t)(timeout_s * 1e9);
    struct sockaddr_un addr = {0};
    addr.sun_family = AF_UNIX;
    if (strlen(s->socket_path) >= sizeof addr.sun_path)
        return fail_msg(err, "socket path too long: %s", s->socket_path);
    strcpy(addr.sun_path, s->socket_path);
    for (;;) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return fail_msg(err, "socket: %s", strerror(errno));
        if (connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0) {
            int size = 1 << 20;
            setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
            s->fd = fd;
            break;
        }
        int saved = errno;
        close(fd);
        if (!pid_alive(s->model->owner_pid))
            return fail_msg(err, "the process serving model '%s' has exited", s->model->name);
        if (now_ns() >= deadline)
            return fail_msg(err, "model '%s' instance %d: cannot connect to its worker at %s within %gs: %s",
                            s->model->name, s->index, s->socket_path, timeout_s, strerror(saved));
        usleep(20000);
    }
    /* hello -> welcome: the worker thread is there and answering */
    mp_writer *h = &s->header;
    h->len = 0;
    h->failed = false;
    int64_t id = ++s->next_id;
    mw_map(h, 3);
    mw_str(h, "t"); mw_str(h, "hello");
    mw_str(h, "id"); mw_int(h, id);
    mw_str(h, "pid"); mw_int(h, (int64_t)getpid());
    ptt_answer a;
    uint64_t nframes;
    int rc = -1;
    if (h->failed) {
        fail_msg(err, "out of memory");
    } else if (send_message(s, h->buf, h->len, NULL, 0, err) == 0 &&
               receive_answer(s, id, timeout_s, &a, s->frame_data, s->frame_len, &nframes, err) == 0) {
        rc = strcmp(a.kind, "welcome") == 0 ? 0 : fail_msg(err, "model '%s': unexpected handshake answer '%s'",
                                                            s->model->name, a.kind);
        answer_free(&a);
    }
    if (rc)
        disconnect(s);
    return rc;
}

/* ---- the backend's entry points ---------------------------------------------------------- */

EXPORT TRITONSERVER_Error *TRITONBACKEND_Initialize(TRITONBACKEND_Backend *backend)
{
    (void)backend;
    uint32_t major = 0, minor = 0;
    TRITONSERVER_Error *e = TRITONBACKEND_ApiVersion(&major, &minor);
    if (e != NULL)
        return e;
    if (major != PTT_API_MAJOR || minor < PTT_API_MINOR)
        return errorf(TRITONSERVER_ERROR_UNSUPPORTED,
                      "the pytriton_torch backend was written for Triton backend API %d.%d; this tritonserver "
                      "has %u.%u",
                      PTT_API_MAJOR, PTT_API_MINOR, major, minor);
    return NULL;
}

EXPORT TRITONSERVER_Error *TRITONBACKEND_ModelInitialize(TRITONBACKEND_Model *model)
{
    const char *name = NULL, *location = NULL;
    TRITONBACKEND_ArtifactType kind;
    TRITONSERVER_Error *e = TRITONBACKEND_ModelName(model, &name);
    if (e == NULL)
        e = TRITONBACKEND_ModelRepository(model, &kind, &location);
    if (e != NULL)
        return e;
    if (kind != TRITONBACKEND_ARTIFACT_FILESYSTEM)
        return errorf(TRITONSERVER_ERROR_UNSUPPORTED, "model '%s': its repository is not a folder", name);
    model_state *m = calloc(1, sizeof *m);
    if (m == NULL)
        return errorf(TRITONSERVER_ERROR_INTERNAL, "out of memory");
    snprintf(m->name, sizeof m->name, "%s", name);
    e = read_settings(m, location);
    if (e == NULL)
        e = TRITONBACKEND_ModelSetState(model, m);
    if (e != NULL)
        free(m);
    return e;
}

EXPORT TRITONSERVER_Error *TRITONBACKEND_ModelFinalize(TRITONBACKEND_Model *model)
{
    void *m = NULL;
    TRITONSERVER_Error *e = TRITONBACKEND_ModelState(model, &m);
    free(m);
    return e;
}

EXPORT TRITONSERVER_Error *TRITONBACKEND_ModelInstanceInitialize(TRITONBACKEND_ModelInstance *instance)
{
    TRITONBACKEND_Model *model;
    const char *name;
    void *vm = NULL;
    TRITONSERVER_Error *e = TRITONBACKEND_ModelInstanceModel(instance, &model);
    if (e == NULL)
        e = TRITONBACKEND_ModelState(model, &vm);
    if (e == NULL)
        e = TRITONBACKEND_ModelInstanceName(instance, &name);
    if (e != NULL)
        return e;
    model_state *m = vm;
    /* Instances of a group named after the model are "<model>_<index>". */
    const char *under = strrchr(name, '_');
    char *end = NULL;
    long index = under == NULL ? -1 : strtol(under + 1, &end, 10);
    if (index < 0 || end == NULL || *end != 0 || end == under + 1)
        return errorf(TRITONSERVER_ERROR_INVALID_ARG, "model '%s': unexpected instance name '%s'", m->name, name);
    instance_state *s = calloc(1, sizeof *s);
    if (s == NULL)
        return errorf(TRITONSERVER_ERROR_INTERNAL, "out of memory");
    s->model = m;
    s->triton = instance;
    s->index = (int)index;
    s->fd = -1;
    s->reader.fd = -1;
    snprintf(s->socket_path, sizeof s->socket_path, "%s.%ld", m->endpoint, index);
    snprintf(s->shm_prefix, sizeof s->shm_prefix, "%s-%ld-%ld-req", m->shm_prefix, index, (long)getpid());
    s->frame_data = malloc(sizeof *s->frame_data * PTT_MAX_FRAMES);
    s->frame_len = malloc(sizeof *s->frame_len * PTT_MAX_FRAMES);
    char err[PTT_ERRLEN];
    if (s->frame_data == NULL || s->frame_len == NULL) {
        instance_free(s);
        return errorf(TRITONSERVER_ERROR_INTERNAL, "out of memory");
    }
    if (connect_worker(s, m->connect_timeout_s, err)) {
        instance_free(s);
        return TRITONSERVER_ErrorNew(TRITONSERVER_ERROR_UNAVAILABLE, err);
    }
    e = TRITONBACKEND_ModelInstanceSetState(instance, s);
    if (e != NULL)
        instance_free(s);
    return e;
}

EXPORT TRITONSERVER_Error *TRITONBACKEND_ModelInstanceFinalize(TRITONBACKEND_ModelInstance *instance)
{
    void *vs = NULL;
    TRITONSERVER_Error *e = TRITONBACKEND_ModelInstanceState(instance, &vs);
    if (vs != NULL)
        instance_free(vs);
    return e;
}

/* ---- execute ----------------------------------------------------------------------------- */

typedef struct {          /* one input of one request, as Triton holds it */
    const char *name;
    TRITONSERVER_DataType dtype;
    const int64_t *shape;
    uint32_t ndims;
    uint64_t nbytes;
    uint32_t nbuffers;
    TRITONBACKEND_Input *input;
    bool in_shm;
} input_ref;

typedef struct {
    TRITONBACKEND_Request *request;
    const char *id;
    char error[PTT_ERRLEN]; /* set: this request fails with it */
    uint32_t first_input, ninputs;
} request_ref;

static void append_json_string(mp_writer *w, const char *s)
{
    mw_raw(w, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            mw_raw(w, esc, 2);
        } else if (c < 0x20) {
            char esc[8];
            snprintf(esc, sizeof esc, "\\u%04x", c);
            mw_raw(w, esc, 6);
        } else {
            mw_raw(w, &c, 1);
        }
    }
    mw_raw(w, "\"", 1);
}

/* The request's parameters as a JSON object (the text the worker gets, as from the Python backend). */
static int parameters_json(TRITONBACKEND_Request *request, mp_writer *json, char *err)
{
    uint32_t count = 0;
    if (take_error(TRITONBACKEND_RequestParameterCount(request, &count), err, "request parameters"))
        return -1;
    json->len = 0;
    json->failed = false;
    mw_raw(json, "{", 1);
    for (uint32_t k = 0; k < count; k++) {
        const char *key;
        TRITONSERVER_ParameterType type;
        const void *value;
        if (take_error(TRITONBACKEND_RequestParameter(request, k, &key, &type, &value), err, "request parameter"))
            return -1;
        if (k)
            mw_raw(json, ",", 1);
        append_json_string(json, key);
        mw_raw(json, ":", 1);
        char number[64];
        switch (type) {
        case TRITONSERVER_PARAMETER_STRING:
            append_json_string(json, (const char *)value);
            break;
        case TRITONSERVER_PARAMETER_INT:
            snprintf(number, sizeof number, "%lld", (long long)*(const int64_t *)value);
            mw_raw(json, number, strlen(number));
            break;
        case TRITONSERVER_PARAMETER_BOOL:
            mw_raw(json, *(const bool *)value ? "true" : "false", *(const bool *)value ? 4 : 5);
            break;
        case TRITONSERVER_PARAMETER_DOUBLE:
            snprintf(number, sizeof number, "%.17g", *(const double *)value);
            if (strspn(number, "-0123456789.eE+") != strlen(number)) /* inf/nan: not JSON */
                snprintf(number, sizeof number, "null");
            mw_raw(json, number, strlen(number));
            break;
        default:
            mw_raw(json, "null", 4);
        }
    }
    mw_raw(json, "}", 1);
    return json->failed ? fail_msg(err, "out of memory") : 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Gathers an input's buffers into `dst` (CPU memory only). */
static int gather_input(const input_ref *in, uint8_t *dst, char *err)
{
    uint64_t at = 0;
    for (uint32_t b = 0; b < in->nbuffers; b++) {
        const void *data;
        uint64_t size;
        TRITONSERVER_MemoryType mtype = TRITONSERVER_MEMORY_CPU;
        int64_t mid = 0;
        if (take_error(TRITONBACKEND_InputBuffer(in->input, b, &data, &size, &mtype, &mid), err, in->name))
            return -1;
        if (mtype != TRITONSERVER_MEMORY_CPU && mtype != 1 /* CPU_PINNED */)
            return fail_msg(err, "input '%s' is in GPU memory; the pytriton_torch backend takes CPU tensors",
                            in->name);
        if (size > in->nbytes - at)
            return fail_msg(err, "input '%s': its buffers hold more than its %llu bytes", in->name,
                            (unsigned long long)in->nbytes);
        if (size)
            memcpy(dst + at, data, size);
        at += size;
    }
    if (at != in->nbytes)
        return fail_msg(err, "input '%s': its buffers hold %llu of its %llu bytes", in->name,
                        (unsigned long long)at, (unsigned long long)in->nbytes);
    return 0;
}

static void append_request_id(char *message, const char *id)
{
    if (id != NULL && id[0]) {
        size_t n = strlen(message);
        snprintf(message + n, PTT_ERRLEN - n, " [request id: %s]", id);
    }
}

static void send_error(TRITONBACKEND_Request *request, const char *id, const char *message)
{
    char text[PTT_ERRLEN];
    snprintf(text, sizeof text, "%s", message);
    append_request_id(text, id);
    TRITONBACKEND_Response *response = NULL;
    TRITONSERVER_Error *e = TRITONBACKEND_ResponseNew(&response, request);
    if (e != NULL) {
        LOG(TRITONSERVER_LOG_ERROR, "cannot answer a request with its error (%s): %s", text,
            TRITONSERVER_ErrorMessage(e));
        TRITONSERVER_ErrorDelete(e);
        return;
    }
    TRITONSERVER_Error *failure = TRITONSERVER_ErrorNew(TRITONSERVER_ERROR_INTERNAL, text);
    e = TRITONBACKEND_ResponseSend(response, TRITONSERVER_RESPONSE_COMPLETE_FINAL, failure);
    TRITONSERVER_ErrorDelete(failure);
    if (e != NULL) {
        LOG(TRITONSERVER_LOG_ERROR, "cannot send an error response: %s", TRITONSERVER_ErrorMessage(e));
        TRITONSERVER_ErrorDelete(e);
    }
}

/* Builds and sends one request's response from its group of the answer. */
static int respond(request_ref *r, const ptt_answer *a, uint32_t group, const uint8_t *const *frame_data,
                   const uint8_t *seg, char *err)
{
    uint32_t nwanted = 0;
    if (take_error(TRITONBACKEND_RequestOutputCount(r->request, &nwanted), err, "requested outputs"))
        return -1;
    TRITONBACKEND_Response *response = NULL;
    if (take_error(TRITONBACKEND_ResponseNew(&response, r->request), err, "response"))
        return -1;
    int rc = 0;
    for (uint32_t k = a->group_start[group]; rc == 0 && k < a->group_start[group + 1]; k++) {
        const ptt_tensor *t = &a->tensors[k];
        char name[4097];
        memcpy(name, t->name, t->name_len);
        name[t->name_len] = 0;
        bool wanted = false; /* outputs the client did not ask for are left out */
        for (uint32_t w = 0; w < nwanted && !wanted; w++) {
            const char *wname;
            if (TRITONBACKEND_RequestOutputName(r->request, w, &wname) == NULL && strcmp(wname, name) == 0)
                wanted = true;
        }
        if (!wanted)
            continue;
        TRITONBACKEND_Output *output;
        void *buffer = NULL;
        TRITONSERVER_MemoryType mtype = TRITONSERVER_MEMORY_CPU;
        int64_t mid = 0;
        if (take_error(TRITONBACKEND_ResponseOutput(response, &output, name, t->dtype, t->shape, t->ndims), err,
                       name) ||
            take_error(TRITONBACKEND_OutputBuffer(output, &buffer, t->nbytes, &mtype, &mid), err, name)) {
            rc = -1;
            break;
        }
        if (mtype != TRITONSERVER_MEMORY_CPU && mtype != 1) {
            rc = fail_msg(err, "output '%s': Triton gave a GPU buffer", name);
            break;
        }
        if (t->nbytes)
            memcpy(buffer, t->frame >= 0 ? frame_data[t->frame] : seg + t->offset, t->nbytes);
    }
    if (rc) {
        TRITONBACKEND_ResponseDelete(response);
        return -1;
    }
    TRITONSERVER_Error *e = TRITONBACKEND_ResponseSend(response, TRITONSERVER_RESPONSE_COMPLETE_FINAL, NULL);
    if (e != NULL) {
        LOG(TRITONSERVER_LOG_ERROR, "model response not sent: %s", TRITONSERVER_ErrorMessage(e));
        TRITONSERVER_ErrorDelete(e);
    }
    return 0;
}

static uint64_t align_up(uint64_t n) { return (n + PTT_ALIGN - 1) & ~(uint64_t)(PTT_ALIGN - 1); }

/* Forwards the accepted requests as one call and answers them; failures are per-request errors. */
static void run_batch(instance_state *s, request_ref *reqs, uint32_t nreqs, input_ref *inputs,
                      uint64_t *compute_start, uint64_t *compute_end)
{
    model_state *m = s->model;
    char err[PTT_ERRLEN] = "";
    uint32_t accepted = 0, ninputs = 0;
    uint64_t shm_bytes = 0, scratch_bytes = 0;
    for (uint32_t k = 0; k < nreqs; k++) {
        if (reqs[k].error[0])
            continue;
        accepted++;
        for (uint32_t i = 0; i < reqs[k].ninputs; i++) {
            input_ref *in = &inputs[reqs[k].first_input + i];
            in->in_shm = in->nbytes > PTT_INLINE_LIMIT;
            if (in->in_shm)
                shm_bytes += align_up(in->nbytes);
            else if (in->nbuffers != 1)
                scratch_bytes += in->nbytes;
            ninputs++;
        }
    }
    if (!accepted)
        return;
    struct iovec *frames = calloc(ninputs ? ninputs : 1, sizeof *frames);
    const uint8_t **frame_data = s->frame_data;
    uint64_t *frame_len = s->frame_len;
    mp_writer *json = &s->json;
    ptt_answer a = {0};
    bool have_answer = false;
    uint32_t nframes = 0;
    if (frames == NULL) {
        fail_msg(err, "out of memory");
        goto done;
    }
    if (scratch_bytes > s->scratch_cap) {
        uint8_t *grown = realloc(s->scratch, scratch_bytes);
        if (grown == NULL) {
            fail_msg(err, "out of memory");
            goto done;
        }
        s->scratch = grown;
        s->scratch_cap = scratch_bytes;
    }
    if (!m->shm_prefix[0] || writer_reset(&s->writer, s->shm_prefix, shm_bytes, err))
        goto done;
    /* The connection broke earlier (a malformed stream): one quick retry. Before the header is
     * built: the handshake uses the same buffer. */
    if (s->fd < 0 && connect_worker(s, 1.0, err))
        goto done;

    mp_writer *h = &s->header;
    h->len = 0;
    h->failed = false;
    int64_t id = ++s->next_id;
    mw_map(h, 5);
    mw_str(h, "t"); mw_str(h, "infer");
    mw_str(h, "id"); mw_int(h, id);
    mw_str(h, "reqs");
    mw_array(h, accepted);
    uint64_t scratch_used = 0;
    for (uint32_t k = 0; k < nreqs; k++) {
        if (reqs[k].error[0])
            continue;
        mw_array(h, reqs[k].ninputs);
        for (uint32_t i = 0; i < reqs[k].ninputs; i++) {
            input_ref *in = &inputs[reqs[k].first_input + i];
            mw_array(h, 6);
            mw_str(h, in->name);
            mw_str(h, DTYPE_NAMES[in->dtype]);
            mw_array(h, in->ndims);
            for (uint32_t d = 0; d < in->ndims; d++)
                mw_int(h, in->shape[d]);
            if (in->in_shm) {
                uint64_t offset = s->writer.used;
                if (gather_input(in, s->writer.data + offset, err))
                    goto done;
                s->writer.used = align_up(offset + in->nbytes);
                mw_int(h, -1);
                mw_uint(h, offset);
            } else if (in->nbuffers == 1) { /* referenced in place: Triton keeps it until release */
                const void *data;
                uint64_t size;
                TRITONSERVER_MemoryType mtype = TRITONSERVER_MEMORY_CPU;
                int64_t mid = 0;
                if (take_error(TRITONBACKEND_InputBuffer(in->input, 0, &data, &size, &mtype, &mid), err, in->name))
                    goto done;
                if ((mtype != TRITONSERVER_MEMORY_CPU && mtype != 1) || size != in->nbytes) {
                    fail_msg(err, "input '%s': not a CPU buffer of %llu bytes", in->name,
                             (unsigned long long)in->nbytes);
                    goto done;
                }
                frames[nframes].iov_base = (void *)data;
                frames[nframes].iov_len = size;
                mw_int(h, nframes++);
                mw_uint(h, 0);
            } else {
                if (gather_input(in, s->scratch + scratch_used, err))
                    goto done;
                frames[nframes].iov_base = s->scratch + scratch_used;
                frames[nframes].iov_len = in->nbytes;
                scratch_used += in->nbytes;
                mw_int(h, nframes++);
                mw_uint(h, 0);
            }
            mw_uint(h, in->nbytes);
        }
    }
    mw_str(h, "meta");
    mw_array(h, accepted);
    for (uint32_t k = 0; k < nreqs; k++) {
        if (reqs[k].error[0])
            continue;
        if (parameters_json(reqs[k].request, json, err))
            goto done;
        uint32_t nout = 0;
        if (take_error(TRITONBACKEND_RequestOutputCount(reqs[k].request, &nout), err, "requested outputs"))
            goto done;
        const char **names = calloc(nout ? nout : 1, sizeof *names);
        if (names == NULL) {
            fail_msg(err, "out of memory");
            goto done;
        }
        for (uint32_t o = 0; o < nout; o++)
            if (take_error(TRITONBACKEND_RequestOutputName(reqs[k].request, o, &names[o]), err, "output name")) {
                free(names);
                goto done;
            }
        qsort(names, nout, sizeof *names, cmp_str);
        mw_array(h, 3);
        mw_strn(h, (const char *)json->buf, json->len);
        mw_array(h, nout);
        for (uint32_t o = 0; o < nout; o++)
            mw_str(h, names[o]);
        free(names);
        mw_str(h, reqs[k].id ? reqs[k].id : "");
    }
    mw_str(h, "seg");
    mw_str(h, s->writer.name);
    if (h->failed) {
        fail_msg(err, "out of memory");
        goto done;
    }
    *compute_start = now_ns();
    if (send_message(s, h->buf, h->len, frames, nframes, err)) {
        disconnect(s);
        goto done;
    }
    uint64_t n_in = 0;
    if (receive_answer(s, id, m->infer_timeout_s, &a, frame_data, frame_len, &n_in, err))
        goto done;
    have_answer = true;
    *compute_end = now_ns();
    if (strcmp(a.kind, "err") == 0) {
        snprintf(err, sizeof err, "%.*s", (int)(a.msg_len < PTT_ERRLEN - 64 ? a.msg_len : PTT_ERRLEN - 64),
                 a.msg ? (const char *)a.msg : "the infer function failed");
        goto done;
    }
    if (strcmp(a.kind, "ok") != 0) {
        fail_msg(err, "model '%s': unexpected answer '%s' from the worker", m->name, a.kind);
        goto done;
    }
    char detail[PTT_ERRLEN];
    if (reader_map(&s->reader, a.seg, a.seg_len, detail) ||
        check_answer(&a, accepted, frame_data + 1, frame_len + 1, n_in - 1, s->reader.data, s->reader.size,
                     detail)) {
        fail_msg(err, "model '%s': malformed answer from the worker: %s", m->name, detail);
        goto done;
    }
    uint32_t group = 0;
    for (uint32_t k = 0; k < nreqs; k++) {
        if (reqs[k].error[0])
            continue;
        if (respond(&reqs[k], &a, group, frame_data + 1, s->reader.data, reqs[k].error))
            send_error(reqs[k].request, reqs[k].id, reqs[k].error);
        else
            reqs[k].error[0] = 0;
        group++;
    }
    answer_free(&a);
    free(frames);
    return;
done:
    if (have_answer)
        answer_free(&a);
    free(frames);
    if (!err[0])
        snprintf(err, sizeof err, "model '%s': the request failed", m->name);
    for (uint32_t k = 0; k < nreqs; k++)
        if (!reqs[k].error[0]) {
            snprintf(reqs[k].error, PTT_ERRLEN, "%s", err);
            send_error(reqs[k].request, reqs[k].id, reqs[k].error);
        }
}

EXPORT TRITONSERVER_Error *TRITONBACKEND_ModelInstanceExecute(TRITONBACKEND_ModelInstance *instance,
                                                              TRITONBACKEND_Request **requests,
                                                              const uint32_t request_count)
{
    uint64_t exec_start = now_ns();
    void *vs = NULL;
    TRITONSERVER_Error *e = TRITONBACKEND_ModelInstanceState(instance, &vs);
    if (e != NULL)
        return e;
    instance_state *s = vs;
    model_state *m = s->model;
    request_ref *reqs = calloc(request_count ? request_count : 1, sizeof *reqs);
    uint32_t total_inputs = 0, cap = 0;
    input_ref *inputs = NULL;
    if (reqs == NULL)
        return errorf(TRITONSERVER_ERROR_INTERNAL, "out of memory");
    for (uint32_t k = 0; k < request_count; k++) {
        request_ref *r = &reqs[k];
        r->request = requests[k];
        if (TRITONBACKEND_RequestId(r->request, &r->id) != NULL)
            r->id = "";
        uint32_t n = 0;
        if (take_error(TRITONBACKEND_RequestInputCount(r->request, &n), r->error, "request inputs"))
            continue;
        if (total_inputs + n > cap) {
            uint32_t grown = (total_inputs + n) * 2 + 8;
            input_ref *more = realloc(inputs, sizeof *more * grown);
            if (more == NULL) {
                snprintf(r->error, PTT_ERRLEN, "out of memory");
                continue;
            }
            inputs = more;
            cap = grown;
        }
        r->first_input = total_inputs;
        for (uint32_t i = 0; i < n && !r->error[0]; i++) {
            input_ref *in = &inputs[total_inputs + i];
            memset(in, 0, sizeof *in);
            if (take_error(TRITONBACKEND_RequestInputByIndex(r->request, i, &in->input), r->error, "request input") ||
                take_error(TRITONBACKEND_InputProperties(in->input, &in->name, &in->dtype, &in->shape, &in->ndims,
                                                         &in->nbytes, &in->nbuffers),
                           r->error, "input properties"))
                break;
            if (in->dtype <= 0 || in->dtype >= PTT_DTYPE_COUNT)
                snprintf(r->error, PTT_ERRLEN, "model '%s': input '%s' has an unsupported datatype", m->name,
                         in->name);
            else if (m->max_input_bytes && in->nbytes > m->max_input_bytes)
                snprintf(r->error, PTT_ERRLEN,
                         "model '%s': input '%s' has %llu bytes; the limit is %llu bytes "
                         "(ModelConfig.max_input_bytes)",
                         m->name, in->name, (unsigned long long)in->nbytes, (unsigned long long)m->max_input_bytes);
        }
        if (!r->error[0]) {
            r->ninputs = n;
            total_inputs += n;
        }
    }
    for (uint32_t k = 0; k < request_count; k++) /* refused before any byte crossed */
        if (reqs[k].error[0])
            send_error(reqs[k].request, reqs[k].id, reqs[k].error);
    uint64_t compute_start = now_ns(), compute_end = 0;
    run_batch(s, reqs, request_count, inputs, &compute_start, &compute_end);
    uint64_t exec_end = now_ns();
    if (!compute_end)
        compute_end = exec_end;
    for (uint32_t k = 0; k < request_count; k++) {
        TRITONSERVER_Error *se = TRITONBACKEND_ModelInstanceReportStatistics(
            instance, reqs[k].request, !reqs[k].error[0], exec_start, compute_start, compute_end, exec_end);
        if (se != NULL)
            TRITONSERVER_ErrorDelete(se);
    }
    TRITONSERVER_Error *be = TRITONBACKEND_ModelInstanceReportBatchStatistics(instance, request_count, exec_start,
                                                                             compute_start, compute_end, exec_end);
    if (be != NULL)
        TRITONSERVER_ErrorDelete(be);
    for (uint32_t k = 0; k < request_count; k++) {
        TRITONSERVER_Error *re = TRITONBACKEND_RequestRelease(reqs[k].request, TRITONSERVER_REQUEST_RELEASE_ALL);
        if (re != NULL) {
            LOG(TRITONSERVER_LOG_ERROR, "model '%s': cannot release a request: %s", m->name,
                TRITONSERVER_ErrorMessage(re));
            TRITONSERVER_ErrorDelete(re);
        }
    }
    free(inputs);
    free(reqs);
    return NULL;
}

#endif /* PTT_PARSER_ONLY */
