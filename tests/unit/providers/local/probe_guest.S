    .code16
    .globl _start
_start:
    cli
    xor %ax, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov $0x7c00, %sp
    cld
    mov $0x1000, %di
    mov $0x1800, %cx
    rep stosw
    movl $0x2003, 0x1000
    movl $0x3003, 0x2000
    mov $0x3000, %di
    mov $0x83, %eax
    xor %edx, %edx
    mov $64, %cx
4:  mov %eax, (%di)
    mov %edx, 4(%di)
    add $0x200000, %eax
    add $8, %di
    loop 4b
    lgdtl gdtr
    mov %cr4, %eax
    or $0x20, %eax
    mov %eax, %cr4
    mov $0x1000, %eax
    mov %eax, %cr3
    mov $0xC0000080, %ecx
    rdmsr
    or $0x100, %eax
    wrmsr
    mov %cr0, %eax
    or $0x80000001, %eax
    mov %eax, %cr0
    ljmp $0x08, $long_mode
    .code64
long_mode:
    mov $0x10, %ax
    mov %ax, %es
    mov $0x200000, %rdi
    mov $(62*0x200000/8), %rcx
    mov $0x5a5a5a5a5a5a5a5a, %rax
    rep stosq
    lea msg(%rip), %rsi
    mov $0x3f8, %dx
1:  lodsb
    test %al, %al
    jz 2f
    out %al, %dx
    jmp 1b
2:  mov $0xf4, %dx
    mov $0x31, %al
    out %al, %dx
3:  hlt
    jmp 3b
    .p2align 3
gdt:
    .quad 0
    .quad 0x00209A0000000000
    .quad 0x0000920000000000
gdtr:
    .word gdtr - gdt - 1
    .long gdt
msg:
    .asciz "BIVY-PROBE-OK\r\n"
