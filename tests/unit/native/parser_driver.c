/* Test driver for the native backend's parsing of what the worker sends (_backend.c, parser part).
 *
 * stdin: records <u32 expected groups><u64 segment size><u32 length><message bytes>; each message is
 * a whole framed message as read from the socket. One line per record on stdout: "ok <groups>
 * <tensors>" or "error <text>". Built with sanitizers by tests/unit/test_native_parser.py.
 */
#define PTT_PARSER_ONLY
#include "_backend.c"

static int read_all(void *buf, size_t n)
{
    return fread(buf, 1, n, stdin) == n ? 0 : -1;
}

int main(void)
{
    static const uint8_t *frame_data[PTT_MAX_FRAMES];
    static uint64_t frame_len[PTT_MAX_FRAMES];
    for (;;) {
        uint32_t groups, len;
        uint64_t seg_size;
        if (read_all(&groups, 4) || read_all(&seg_size, 8) || read_all(&len, 4))
            return 0;
        /* exact-size heap copies: any read past the end is caught by AddressSanitizer */
        uint8_t *msg = malloc(len ? len : 1);
        uint8_t *seg = malloc(seg_size ? seg_size : 1);
        if (msg == NULL || seg == NULL || read_all(msg, len))
            return 2;
        memset(seg, 0, seg_size);
        char err[PTT_ERRLEN] = "";
        uint64_t nframes = 0;
        ptt_answer a;
        memset(&a, 0, sizeof a);
        if (split_frames(msg, len, &nframes, frame_data, frame_len, PTT_MAX_FRAMES, err) ||
            parse_answer(frame_data[0], frame_len[0], &a, err) ||
            check_answer(&a, groups, frame_data + 1, frame_len + 1, nframes - 1, seg_size ? seg : NULL, seg_size,
                         err))
            printf("error %s\n", err);
        else
            printf("ok %u %u %s\n", a.groups, a.ntensors, a.kind);
        answer_free(&a);
        free(msg);
        free(seg);
    }
}
