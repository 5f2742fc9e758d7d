# softnet environment scrubber, x86-64 (ELF entry point and Mach-O initializer).
#
# Runs before any code of the Bun runtime. Keeps only the environment entries whose name is on
# the allowlist at the end of this file; every other entry is removed from the envp array (the
# kept ones move down, the freed slots become NULL) and its bytes are zeroed, so neither the array
# nor a stale copy of it can hand a Bun or JavaScriptCore hook (BUN_OPTIONS, BUN_BE_BUN, JSC_*,
# NODE_OPTIONS, TMPDIR, ...) to the runtime. Position-independent; no stack data, no libc.
# scripts/release/harden-runtime.ts copies the assembled bytes into the runtime and fills in the
# two rel32 jumps ("elf_jump" and "macho_jump").
        .intel_syntax noprefix
        .text


# ELF e_entry. rsp -> argc, argv[0..argc-1], NULL, envp..., NULL, auxv. rdx = the dynamic
# linker's fini function, which _start expects untouched.
elf_entry:
        mov     rcx, qword ptr [rsp]
        lea     rdi, [rsp + 8*rcx + 16]
        push    rdx
        call    scrub
        pop     rdx
elf_jump:
        .byte   0xe9            # jmp rel32 -> the runtime's own _start
        .long   0

# Mach-O __init_offsets entry, called by dyld as init(argc, argv, envp, apple, vars).
macho_init:
        push    rdi
        push    rsi
        push    rdx
        push    rcx
        push    r8
        mov     rdi, rdx
        call    scrub
        pop     r8
        pop     rcx
        pop     rdx
        pop     rsi
        pop     rdi
macho_jump:
        .byte   0xe9            # jmp rel32 -> the runtime's own initializer (tail call)
        .long   0

# void scrub(char **envp). Clobbers rax, rcx, rsi, rdi, r8, r9.
scrub:
        mov     rsi, rdi                        # rsi: where the next kept entry goes
next_entry:
        mov     rax, qword ptr [rdi]            # rax: this entry
        test    rax, rax
        jz      clear_tail
        add     rdi, 8
        lea     r8, [rip + allowlist]           # r8: the allowlist entry being compared
next_name:
        cmp     byte ptr [r8], 0
        je      wipe                            # no name matched
        xor     ecx, ecx
compare:
        mov     r9b, byte ptr [r8 + rcx]
        test    r9b, r9b
        jz      keep                            # the whole "NAME=" matched
        cmp     r9b, byte ptr [rax + rcx]
        jne     skip_name
        inc     rcx
        jmp     compare
skip_name:
        inc     r8
        cmp     byte ptr [r8 - 1], 0
        jne     skip_name
        jmp     next_name
keep:
        mov     qword ptr [rsi], rax
        add     rsi, 8
        jmp     next_entry
wipe:
        cmp     byte ptr [rax], 0
        je      next_entry
        mov     byte ptr [rax], 0
        inc     rax
        jmp     wipe
clear_tail:                                     # rdi: the old terminating NULL
        cmp     rsi, rdi
        jae     done
        mov     qword ptr [rsi], 0
        add     rsi, 8
        jmp     clear_tail
done:
        ret

# "NAME=" strings, each NUL-terminated; an empty string ends the list.
allowlist:
        .asciz  "SENTRY_DSN="
        .asciz  "CIRRUS_SENTRY_TAGS="
        .asciz  "SUDO_UID="
        .asciz  "SUDO_GID="
        .byte   0
