// softnet environment scrubber, AArch64 (ELF entry point and Mach-O initializer).
//
// Runs before any code of the Bun runtime. Keeps only the environment entries whose name is on
// the allowlist at the end of this file; every other entry is removed from the envp array (the
// kept ones move down, the freed slots become NULL) and its bytes are zeroed, so neither the array
// nor a stale copy of it can hand a Bun or JavaScriptCore hook (BUN_OPTIONS, BUN_BE_BUN, JSC_*,
// NODE_OPTIONS, TMPDIR, ...) to the runtime. Position-independent; no stack, no libc.
// scripts/release/harden-runtime.ts copies the assembled bytes into the runtime and fills in the
// two B instructions ("elf_jump" and "macho_jump").
        .text


// ELF e_entry. sp -> argc, argv[0..argc-1], NULL, envp..., NULL, auxv. x0 = the dynamic
// linker's fini function, which _start expects untouched.
elf_entry:
        mov     x9, x0
        ldr     x1, [sp]
        add     x0, sp, x1, lsl #3
        add     x0, x0, #16
        bl      scrub
        mov     x0, x9
elf_jump:
        .long   0x14000000      // b -> the runtime's own _start

// Mach-O __init_offsets entry, called by dyld as init(argc, argv, envp, apple, vars).
macho_init:
        mov     x9, x0
        mov     x10, x1
        mov     x11, x2
        mov     x12, x3
        mov     x13, x4
        mov     x14, x30
        mov     x0, x2
        bl      scrub
        mov     x0, x9
        mov     x1, x10
        mov     x2, x11
        mov     x3, x12
        mov     x4, x13
        mov     x30, x14
macho_jump:
        .long   0x14000000      // b -> the runtime's own initializer (tail call)

// void scrub(char **envp). Clobbers x0-x6 (and x30 through the caller's bl); not x9-x14.
scrub:
        mov     x1, x0                  // x1: where the next kept entry goes
next_entry:
        ldr     x2, [x0]                // x2: this entry
        cbz     x2, clear_tail
        add     x0, x0, #8
        adr     x3, allowlist           // x3: the allowlist entry being compared
next_name:
        ldrb    w4, [x3]
        cbz     w4, wipe                // no name matched
        mov     x5, #0
compare:
        ldrb    w4, [x3, x5]
        cbz     w4, keep                // the whole "NAME=" matched
        ldrb    w6, [x2, x5]
        cmp     w4, w6
        b.ne    skip_name
        add     x5, x5, #1
        b       compare
skip_name:
        ldrb    w4, [x3], #1
        cbnz    w4, skip_name
        b       next_name
keep:
        str     x2, [x1], #8
        b       next_entry
wipe:
        ldrb    w4, [x2]
        cbz     w4, next_entry
        strb    wzr, [x2], #1
        b       wipe
clear_tail:                             // x0: the old terminating NULL
        cmp     x1, x0
        b.hs    done
        str     xzr, [x1], #8
        b       clear_tail
done:
        ret

// "NAME=" strings, each NUL-terminated; an empty string ends the list.
allowlist:
        .asciz  "SENTRY_DSN="
        .asciz  "CIRRUS_SENTRY_TAGS="
        .asciz  "SUDO_UID="
        .asciz  "SUDO_GID="
        .byte   0
