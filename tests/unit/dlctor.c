/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * A library whose constructor waits for a byte on the FIFO that
 * SL_DLCTOR_FIFO names: dlopen()ed by test-handoff's "dlopen-wait" mode
 * while another thread's first write() (the preload client's wrapper)
 * must get through to write that byte.  The dynamic linker's lock is held
 * meanwhile, so a wrapper that looked libc's write up with dlsym there
 * would wait for ever.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

__attribute__((constructor)) static void wait_for_a_byte(void)
{
    const char *fifo = getenv("SL_DLCTOR_FIFO");
    char byte;
    int fd = fifo ? open(fifo, O_RDONLY) : -1;

    if (fd >= 0) {
        (void)!read(fd, &byte, 1);
        close(fd);
    }
}
