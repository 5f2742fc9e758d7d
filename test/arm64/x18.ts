/**
 * Finding register x18 in AArch64 machine code.
 *
 * Apple reserves x18 on its arm64 platforms (the "platform register": the kernel may change it at
 * any time, so code must neither read nor write it; Apple, "Writing ARM64 code for Apple
 * platforms"). TinyCC's arm64 backend does not know that: its reg_classes list x0-x18 as
 * allocatable (oven-sh/tinycc arm64-gen.c, NB_REGS 28 "x0-x18, x30, v0-v7"), and its allocator hands
 * out the lowest free register (tccgen.c get_reg), so x18 appears once an expression keeps 18
 * integer values alive. Code that softnet compiles at run time on a Mac must never reach that.
 *
 * The bytes are decoded with LLVM's disassembler (llvm-mc --disassemble, Debian package llvm-14),
 * which names x18 and its 32-bit half w18 in its output.
 */
import { requireTool } from "../support/tools.ts";

export const X18 = /\b[xw]18\b/;

/** One line per instruction, as llvm-mc prints it. Throws if any 4 bytes are not an instruction. */
export function disassembleAarch64(code: Uint8Array): string[] {
  if (code.length === 0 || code.length % 4 !== 0) {
    throw new Error(`AArch64 code is a whole number of 4-byte instructions, not ${code.length} bytes`);
  }
  const input = Array.from(code, (byte) => `0x${byte.toString(16).padStart(2, "0")}`).join(" ");
  const result = Bun.spawnSync([requireTool("llvm-mc"), "--disassemble", "-triple=aarch64"], {
    stdin: new TextEncoder().encode(input),
    stdout: "pipe",
    stderr: "pipe",
  });
  const errors = result.stderr.toString().trim();
  if (result.exitCode !== 0 || errors !== "") {
    throw new Error(`llvm-mc could not decode every instruction (exit ${result.exitCode}): ${errors}`);
  }
  const instructions = result.stdout
    .toString()
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line !== "" && !line.startsWith("."));
  if (instructions.length !== code.length / 4) {
    throw new Error(`llvm-mc printed ${instructions.length} instructions for ${code.length / 4}`);
  }
  return instructions;
}

/** The instructions that read or write x18 or w18, each with its byte offset. */
export function x18Uses(code: Uint8Array): string[] {
  return disassembleAarch64(code).flatMap((instruction, index) =>
    X18.test(instruction) ? [`+${(index * 4).toString(16).padStart(4, "0")}: ${instruction}`] : [],
  );
}

/**
 * The direct calls and jumps (bl, b) whose target lies outside `code`. The x18 check sees only the
 * bytes it is given, so code reached from there, a helper such as memset or a function TinyCC emits
 * elsewhere (it defers `inline` functions to the end of the file), must be checked too: a caller
 * fails on any such branch rather than leave that code unchecked.
 */
export function branchesOutside(code: Uint8Array): string[] {
  return disassembleAarch64(code).flatMap((instruction, index) => {
    const branch = /^(bl?)\s+#(-?(?:0x[0-9a-f]+|\d+))$/.exec(instruction);
    if (branch === null) return [];
    const target = index * 4 + Number(branch[2]);
    return target >= 0 && target < code.length
      ? []
      : [`+${(index * 4).toString(16).padStart(4, "0")}: ${instruction}`];
  });
}

/** The 4 little-endian bytes of each 32-bit instruction word. */
export function instructionBytes(...words: number[]): Uint8Array {
  const bytes = new Uint8Array(words.length * 4);
  const view = new DataView(bytes.buffer);
  words.forEach((word, index) => {
    view.setUint32(index * 4, word, true);
  });
  return bytes;
}
