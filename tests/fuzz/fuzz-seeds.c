/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Seeds for the fuzz harnesses, made at run time from the project's own
 * writers so they always match the current formats, and the way back from
 * a reader input to a snapshot file:
 *
 *   fuzz-seeds encode SNAP OUT      a snapshot -> a fuzz-reader input (resealed)
 *   fuzz-seeds decode INPUT SNAP    a fuzz-reader input -> the file it opens
 *   fuzz-seeds protocol DIR         one packet per message type, by sl_msg_encode()
 *
 * `decode` turns a crash artifact into a file `snapload inspect` can read.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include "snapload/snapload.h"
#include "migration/protocol.h"
#include "reseal.h"
#include "sparse.h"

static int fail(const char *what, GError *err)
{
    fprintf(stderr, "fuzz-seeds: %s%s%s\n", what, err ? ": " : "", err ? err->message : "");
    g_clear_error(&err);
    return 1;
}

static int encode(const char *snap, const char *out)
{
    g_autofree char *data = NULL;
    g_autoptr(GByteArray) in = g_byte_array_new();
    const uint8_t flags = SPARSE_RESEAL;
    GError *err = NULL;
    gsize len;

    if (!g_file_get_contents(snap, &data, &len, &err)) {
        return fail("reading the snapshot", err);
    }
    g_byte_array_append(in, &flags, 1);
    sparse_encode((const uint8_t *)data, len, in);
    if (!g_file_set_contents(out, (const char *)in->data, in->len, &err)) {
        return fail("writing the seed", err);
    }
    return 0;
}

static int decode(const char *input, const char *snap)
{
    g_autofree char *data = NULL;
    GError *err = NULL;
    gsize len;
    int64_t size;
    int fd;

    if (!g_file_get_contents(input, &data, &len, &err)) {
        return fail("reading the input", err);
    }
    if (len == 0) {
        return fail("an empty input describes no file", NULL);
    }
    fd = open(snap, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        return fail("creating the snapshot file", NULL);
    }
    size = sparse_write(fd, (const uint8_t *)data + 1, len - 1, UINT64_MAX / 2);
    if (size >= 0 && (data[0] & SPARSE_RESEAL)) {
        reseal(fd, (uint64_t)size);
    }
    close(fd);
    return size < 0 ? fail("writing the snapshot file", NULL) : 0;
}

/* Writes the encoding of @m to DIR/NAME. */
static bool write_packet(const char *dir, const char *name, const sl_msg *m)
{
    uint8_t buf[SL_PROTO_MAX];
    size_t len = sl_msg_encode(m, buf);
    g_autofree char *path = g_build_filename(dir, name, NULL);
    GError *err = NULL;

    if (!g_file_set_contents(path, (const char *)buf, (gssize)len, &err)) {
        fail("writing a packet", err);
        return false;
    }
    return true;
}

static int protocol(const char *dir)
{
    sl_msg hello = { .type = SL_MSG_HELLO, .u.hello = { 1, 1, "qemu-system-x86_64" } };
    sl_msg welcome = { .type = SL_MSG_WELCOME, .u.welcome = { 1, 2 } };
    sl_msg reg = { .type = SL_MSG_REGISTER, .u.reg = { "pc.ram", 0x7f0000000000ull,
                                                         1ull << 30, 0, 2u << 20 } };
    sl_msg ok = { .type = SL_MSG_REGISTERED, .u.status = { 0, "registered" } };
    sl_msg refused = { .type = SL_MSG_REGISTERED, .u.status = { -22, "no block 'vga'" } };
    sl_msg done = { .type = SL_MSG_DONE };

    if (g_mkdir_with_parents(dir, 0755) < 0) {
        return fail("creating the seed directory", NULL);
    }
    return write_packet(dir, "hello", &hello) && write_packet(dir, "welcome", &welcome) &&
           write_packet(dir, "register", &reg) && write_packet(dir, "registered", &ok) &&
           write_packet(dir, "refused", &refused) && write_packet(dir, "done", &done) ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc == 4 && !strcmp(argv[1], "encode")) {
        return encode(argv[2], argv[3]);
    }
    if (argc == 4 && !strcmp(argv[1], "decode")) {
        return decode(argv[2], argv[3]);
    }
    if (argc == 3 && !strcmp(argv[1], "protocol")) {
        return protocol(argv[2]);
    }
    fprintf(stderr, "usage: fuzz-seeds encode SNAP OUT | decode INPUT SNAP | protocol DIR\n");
    return 2;
}
