/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * walker.S - a tiny x86 guest for the snapload integration tests.
 *
 * SeaBIOS loads the first sector of this raw disk image at 0x7c00; that
 * sector loads the rest of the image, reads the BIOS E820 memory map,
 * builds an identity map with 2 MiB pages, enters 64-bit long mode and then
 * walks every usable RAM page at or above 1 MiB, forever, in numbered
 * passes.  In pass k each page is first checked against the pattern that
 * pass k-1 wrote (nothing is checked in pass 1), then the pattern of pass k
 * is written: V = address ^ (k * 0x9E3779B97F4A7C15) in the first qword
 * of the page and ~V in its last qword.  Progress, pass completions and
 * mismatches are reported on COM1.  All state is held in registers and in
 * memory below 1 MiB, so a VM snapshot taken at any instant and restored
 * later carries on exactly where it stopped; any page that the restore
 * gets wrong is reported as an ERR line in the following pass.
 *
 * The file goes through the C preprocessor, so comments are C comments:
 * a line starting with a hash would be taken as a directive.  See README.md for the layout.
 */

#define IMG_SECTORS	8		/* whole image: 4 KiB */
#define LOAD_ADDR	0x7c00

#define V_DRIVE		0x0500		/* byte: BIOS boot drive */
#define V_E820N		0x0504		/* dword: E820 entries read */
#define E820_BUF	0x1000		/* raw E820 entries, 24 bytes each */
#define E820_MAX	128
#define REGIONS		0x2000		/* walked regions: {start, end} */
#define STACK_TOP	0x7000

#define PML4		0x10000
#define PDPT		0x11000
#define PD_BASE		0x12000		/* one page directory per GiB */
#define MAX_GIB		128		/* PDs end at 0x92000 */

#define COM1		0x3f8
#define GOLDEN		0x9E3779B97F4A7C15
#define PROGRESS_MASK	0x3fff		/* a progress line every 16384 pages */
#define MAX_ERR_LINES	32
#define LAST_QWORD	4088

	.text
	.code16
	.globl	start
start:
	cli
	ljmp	$0, $1f			/* normalise CS to 0 */
1:	xor	%ax, %ax
	mov	%ax, %ds
	mov	%ax, %es
	mov	%ax, %ss
	mov	$STACK_TOP, %sp
	cld
	sti				/* BIOS disk services may want IRQs */
	mov	%dl, V_DRIVE

	/* COM1: 115200 baud, 8N1, FIFO on, IRQ off. */
	mov	$uart_init, %si
	mov	$(uart_init_end - uart_init) / 2, %cx
1:	lodsw
	movzbw	%al, %dx
	add	$COM1, %dx
	mov	%ah, %al
	out	%al, %dx
	loop	1b

	/* Load sectors 1.. of the image to 0x7e00: LBA first, CHS second. */
	mov	$dap, %si
	mov	$0x42, %ah
	mov	V_DRIVE, %dl
	int	$0x13
	jnc	stage2
	mov	$(0x0200 + IMG_SECTORS - 1), %ax
	mov	$(LOAD_ADDR + 512), %bx
	mov	$0x0002, %cx		/* cylinder 0, sector 2 */
	xor	%dh, %dh		/* head 0 */
	mov	V_DRIVE, %dl
	int	$0x13
	jnc	stage2
	mov	$msg_disk, %si
	call	puts16
halt16:
	cli
	hlt
	jmp	halt16

/* Print the NUL-terminated string at DS:SI on COM1. */
puts16:
	lodsb
	test	%al, %al
	jz	2f
	mov	%al, %ah
	mov	$(COM1 + 5), %dx
1:	in	%dx, %al
	test	$0x20, %al		/* transmitter holding register empty */
	jz	1b
	mov	%ah, %al
	mov	$COM1, %dx
	out	%al, %dx
	jmp	puts16
2:	ret

/* {register offset, value} pairs written in order. */
uart_init:
	.byte	3, 0x80			/* LCR: DLAB on */
	.byte	0, 0x01			/* divisor low: 115200 */
	.byte	1, 0x00			/* divisor high */
	.byte	3, 0x03			/* LCR: 8N1, DLAB off */
	.byte	1, 0x00			/* IER: no interrupts */
	.byte	2, 0xc7			/* FCR: enable and clear FIFOs */
	.byte	4, 0x03			/* MCR: DTR, RTS */
uart_init_end:

	.balign	4
dap:	.byte	0x10, 0			/* disk address packet */
	.word	IMG_SECTORS - 1
	.word	LOAD_ADDR + 512, 0
	.quad	1

msg_disk:
	.asciz	"WALKER DISK READ ERROR\n"

	.org	510
	.word	0xaa55

/* ---------------- sector 2 onwards, loaded at 0x7e00 ---------------- */

stage2:
	/* Fast A20 gate, in case the BIOS left it off. */
	in	$0x92, %al
	or	$0x02, %al
	and	$0xfe, %al
	out	%al, $0x92

	/* E820: ES:DI = buffer, EBX = continuation, count in BP. */
	xor	%ebx, %ebx
	xor	%bp, %bp
	mov	$E820_BUF, %di
1:	movl	$1, 20(%di)		/* extended attributes: valid */
	mov	$0xe820, %eax
	mov	$24, %ecx
	mov	$0x534d4150, %edx	/* "SMAP" */
	int	$0x15
	jc	2f
	cmp	$0x534d4150, %eax
	jne	2f
	inc	%bp
	add	$24, %di
	cmp	$E820_MAX, %bp
	jae	2f
	test	%ebx, %ebx
	jnz	1b
2:	movzwl	%bp, %eax
	mov	%eax, V_E820N

	cli
	mov	$0xff, %al		/* mask both 8259 PICs */
	out	%al, $0xa1
	out	%al, $0x21

	/*
	 * Page tables for the first GiB: PML4[0] -> PDPT, PDPT[0] -> PD 0,
	 * 512 2 MiB pages.  Long mode code adds PDs for the other GiBs.
	 */
	push	%es
	mov	$(PML4 >> 4), %ax
	mov	%ax, %es
	xor	%di, %di
	xor	%eax, %eax
	mov	$(3 * 4096 / 4), %cx
	rep stosl
	movl	$(PDPT + 3), %es:0
	movl	$(PD_BASE + 3), %es:(PDPT - PML4)
	mov	$(PD_BASE - PML4), %di
	mov	$0x83, %eax		/* present, writable, 2 MiB page */
	mov	$512, %cx
1:	mov	%eax, %es:(%di)
	add	$0x200000, %eax
	add	$8, %di
	loop	1b
	pop	%es

	/* Real mode straight to long mode: PAE, LME, then PE and PG. */
	lgdtl	gdt_desc
	mov	%cr4, %eax
	or	$0x20, %eax		/* PAE */
	mov	%eax, %cr4
	mov	$PML4, %eax
	mov	%eax, %cr3
	mov	$0xc0000080, %ecx	/* EFER */
	rdmsr
	or	$0x100, %eax		/* LME */
	wrmsr
	mov	%cr0, %eax
	or	$0x80000001, %eax	/* PG | PE */
	mov	%eax, %cr0
	ljmpl	$0x08, $long_entry

	.balign	8
gdt:	.quad	0
	.quad	0x00209a0000000000	/* 0x08: 64-bit code */
	.quad	0x00cf92000000ffff	/* 0x10: flat data */
gdt_end:
gdt_desc:
	.word	gdt_end - gdt - 1
	.long	gdt

	.balign	8
idt_desc:				/* empty IDT: any fault resets */
	.word	0
	.quad	0

	.code64
long_entry:
	mov	$0x10, %ax
	mov	%ax, %ds
	mov	%ax, %es
	mov	%ax, %ss
	mov	%ax, %fs
	mov	%ax, %gs
	mov	$STACK_TOP, %esp
	lidt	idt_desc

	/*
	 * Keep the usable (type 1) E820 entries, clipped to [1 MiB,
	 * MAX_GIB GiB) and to whole 4 KiB pages.  r8 = highest end,
	 * r9 = bytes kept, rdi = next free slot in REGIONS.
	 */
	mov	$E820_BUF, %esi
	mov	V_E820N, %ecx
	mov	$REGIONS, %edi
	xor	%r8d, %r8d
	xor	%r9d, %r9d
	mov	$MAX_GIB, %r10d
	shl	$30, %r10
	test	%ecx, %ecx
	jz	4f
1:	cmpl	$1, 16(%rsi)
	jne	3f
	testl	$1, 20(%rsi)
	jz	3f
	mov	(%rsi), %rax
	mov	8(%rsi), %rdx
	add	%rax, %rdx
	cmovc	%r10, %rdx		/* wrapped: clip to the limit */
	cmp	$0x100000, %rax
	jae	2f
	mov	$0x100000, %eax
2:	add	$0xfff, %rax
	and	$-4096, %rax
	and	$-4096, %rdx
	cmp	%r10, %rdx
	cmova	%r10, %rdx
	cmp	%rdx, %rax
	jae	3f
	mov	%rax, (%rdi)
	mov	%rdx, 8(%rdi)
	add	$16, %rdi
	add	%rdx, %r9
	sub	%rax, %r9
	cmp	%rdx, %r8
	cmovb	%rdx, %r8
3:	add	$24, %rsi
	dec	%ecx
	jnz	1b
4:	mov	%rdi, %rbp		/* rbp = end of the region list */

	/* Page directories for GiB 1 .. ceil(r8 / 1 GiB) - 1. */
	lea	0x3fffffff(%r8), %rcx
	shr	$30, %rcx
	mov	$1, %edx
	jmp	6f
5:	mov	%rdx, %rdi
	shl	$12, %rdi
	add	$PD_BASE, %rdi
	lea	3(%rdi), %rax
	mov	%rax, PDPT(, %rdx, 8)
	mov	%rdx, %rax
	shl	$30, %rax
	or	$0x83, %rax
	mov	$512, %r11d
7:	mov	%rax, (%rdi)
	add	$0x200000, %rax
	add	$8, %rdi
	dec	%r11d
	jnz	7b
	inc	%rdx
6:	cmp	%rcx, %rdx
	jb	5b
	mov	%cr3, %rax
	mov	%rax, %cr3

	/* WALKER START ram=0x... regions=N, then one REGION line each. */
	mov	$msg_start, %esi
	call	puts
	mov	%r9, %rax
	call	put_hex
	mov	$msg_regions, %esi
	call	puts
	mov	%rbp, %rax
	sub	$REGIONS, %rax
	shr	$4, %rax
	call	put_dec
	call	newline
	mov	$REGIONS, %ebx
	jmp	9f
8:	mov	$msg_region, %esi
	call	puts
	mov	(%rbx), %rax
	call	put_hex
	mov	$msg_end, %esi
	call	puts
	mov	8(%rbx), %rax
	call	put_hex
	call	newline
	add	$16, %rbx
9:	cmp	%rbp, %rbx
	jb	8b
	cmp	$REGIONS, %rbp
	jne	walk
	mov	$msg_noram, %esi
	call	puts
1:	cli
	hlt
	jmp	1b

	/*
	 * The walk.  Registers (the whole state besides RAM):
	 *   r15 = pass number k        r14 = errors so far
	 *   r13 = pages done this pass r12 = k * GOLDEN
	 *   r11 = (k - 1) * GOLDEN     r10 = GOLDEN
	 *   rbx = current region slot  rbp = end of region list
	 *   rsi = current page         rdi = end of current region
	 */
walk:
	mov	$1, %r15d
	xor	%r14d, %r14d
	movabs	$GOLDEN, %r10
	mov	%r10, %r12
	xor	%r11d, %r11d
pass:
	xor	%r13d, %r13d
	mov	$REGIONS, %ebx
region:
	cmp	%rbp, %rbx
	jae	pass_end
	mov	(%rbx), %rsi
	mov	8(%rbx), %rdi
page:
	cmp	$1, %r15
	je	write
	mov	%rsi, %rax
	xor	%r11, %rax
	mov	(%rsi), %rdx
	cmp	%rax, %rdx
	jne	bad_first
check_last:
	not	%rax
	mov	LAST_QWORD(%rsi), %rdx
	cmp	%rax, %rdx
	jne	bad_last
write:
	mov	%rsi, %rax
	xor	%r12, %rax
	mov	%rax, (%rsi)
	not	%rax
	mov	%rax, LAST_QWORD(%rsi)
	inc	%r13
	test	$PROGRESS_MASK, %r13d
	jz	progress
next:
	add	$4096, %rsi
	cmp	%rdi, %rsi
	jb	page
	add	$16, %rbx
	jmp	region

bad_first:
	mov	%rsi, %r8
	call	report_err
	jmp	check_last
bad_last:
	lea	LAST_QWORD(%rsi), %r8
	call	report_err
	jmp	write

progress:
	push	%rsi
	mov	$msg_dot, %esi
	call	puts
	pop	%rsi
	mov	%rsi, %rax
	call	put_hex
	call	newline
	jmp	next

pass_end:
	mov	$msg_pass, %esi
	call	puts
	mov	%r15, %rax
	call	put_dec
	mov	$msg_ok, %esi
	call	puts
	mov	%r14, %rax
	call	put_dec
	call	newline
	inc	%r15
	mov	%r12, %r11
	add	%r10, %r12
	jmp	pass

/*
 * Count a mismatch at r8 (want in rax, got in rdx) and print it while
 * fewer than MAX_ERR_LINES have been seen.  Preserves all registers.
 */
report_err:
	cmp	$MAX_ERR_LINES, %r14
	jae	1f
	push	%rsi
	push	%rax
	mov	$msg_err_addr, %esi
	call	puts
	mov	%r8, %rax
	call	put_hex
	mov	$msg_err_want, %esi
	call	puts
	pop	%rax
	call	put_hex16
	mov	$msg_err_got, %esi
	call	puts
	push	%rax
	mov	%rdx, %rax
	call	put_hex16
	pop	%rax
	call	newline
	pop	%rsi
1:	inc	%r14
	ret

/* Output helpers; all preserve every register. */

/* Send the byte in al to COM1, waiting for room in the transmitter. */
putc:
	push	%rdx
	push	%rax
	mov	$(COM1 + 5), %edx
1:	in	%dx, %al
	test	$0x20, %al
	jz	1b
	pop	%rax
	mov	$COM1, %edx
	out	%al, %dx
	pop	%rdx
	ret

/* Send the NUL-terminated string at rsi. */
puts:
	push	%rsi
	push	%rax
1:	lodsb
	test	%al, %al
	jz	2f
	call	putc
	jmp	1b
2:	pop	%rax
	pop	%rsi
	ret

newline:
	push	%rax
	mov	$0x0a, %al
	call	putc
	pop	%rax
	ret

/* rax as "0x" and lowercase hex: put_hex without leading zeros,
 * put_hex16 with exactly 16 digits. */
put_hex:
	push	%rcx
	mov	$1, %ecx
	jmp	1f
put_hex16:
	push	%rcx
	mov	$16, %ecx
1:	push	%rax
	push	%rdx
	push	%rsi
	sub	$32, %rsp
	lea	31(%rsp), %rsi
	movb	$0, (%rsi)
2:	mov	%eax, %edx
	and	$15, %edx
	movzbl	hex_digits(%rdx), %edx
	dec	%rsi
	mov	%dl, (%rsi)
	shr	$4, %rax
	dec	%ecx
	test	%rax, %rax
	jnz	2b
	test	%ecx, %ecx
	jg	2b
	dec	%rsi
	movb	$0x78, (%rsi)		/* x */
	dec	%rsi
	movb	$0x30, (%rsi)		/* 0 */
	call	puts
	add	$32, %rsp
	pop	%rsi
	pop	%rdx
	pop	%rax
	pop	%rcx
	ret

/* rax in decimal. */
put_dec:
	push	%rax
	push	%rcx
	push	%rdx
	push	%rsi
	sub	$32, %rsp
	lea	31(%rsp), %rsi
	movb	$0, (%rsi)
	mov	$10, %ecx
1:	xor	%edx, %edx
	div	%rcx
	add	$0x30, %dl
	dec	%rsi
	mov	%dl, (%rsi)
	test	%rax, %rax
	jnz	1b
	call	puts
	add	$32, %rsp
	pop	%rsi
	pop	%rdx
	pop	%rcx
	pop	%rax
	ret

hex_digits:	.ascii	"0123456789abcdef"
msg_start:	.asciz	"WALKER START ram="
msg_regions:	.asciz	" regions="
msg_region:	.asciz	"REGION start="
msg_end:	.asciz	" end="
msg_noram:	.asciz	"WALKER NO RAM\n"
msg_dot:	.asciz	". "
msg_pass:	.asciz	"PASS "
msg_ok:		.asciz	" OK errors="
msg_err_addr:	.asciz	"ERR addr="
msg_err_want:	.asciz	" want="
msg_err_got:	.asciz	" got="

	/* Pad to IMG_SECTORS; fails to assemble if the code outgrows it. */
	.org	IMG_SECTORS * 512

	.section .note.GNU-stack, "", @progbits
