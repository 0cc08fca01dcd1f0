# A tiny test guest for the local provider's integration test (GNU as;
# ld -Ttext 0x7c00 --oformat binary). It prints "BIVY-GUEST-UP" on COM1, waits the number of
# seconds in the byte at offset 509 (BIOS int 15h/86h, one second at a time; 255 = forever),
# then powers the machine off through ACPI (PM1a control at 0x604 on QEMU's pc/q35 with
# SeaBIOS), as `systemctl poweroff` would.
    .code16
    .globl _start
_start:
    xor %ax, %ax
    mov %ax, %ds
    mov %ax, %ss
    mov $0x7c00, %sp
    cld
    sti
    mov $up, %si
    call print
wait:
    mov seconds, %al
    cmp $0xff, %al
    je wait_forever
    test %al, %al
    jz off
    dec %al
    mov %al, seconds
    mov $0x000f, %cx
    mov $0x4240, %dx
    mov $0x86, %ah
    int $0x15
    jmp wait
wait_forever:
    hlt
    jmp wait_forever
off:
    mov $bye, %si
    call print
    mov $0x604, %dx
    mov $0x2000, %ax
    out %ax, %dx
halt:
    hlt
    jmp halt
print:
    mov $0x3f8, %dx
1:  lodsb
    test %al, %al
    jz 2f
    out %al, %dx
    jmp 1b
2:  ret
up:
    .asciz "BIVY-GUEST-UP\r\n"
bye:
    .asciz "BIVY-GUEST-POWEROFF\r\n"
    .org 509
seconds:
    .byte 3
    .byte 0x55, 0xaa
