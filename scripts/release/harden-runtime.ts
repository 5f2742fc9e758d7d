/**
 * The hardened Bun runtime: a copy of the official runtime executable that scrubs its own
 * environment before any of Bun's code runs, fed to `bun build --compile
 * --compile-executable-path` so the release binaries carry it (README "Security model").
 *
 * The scrubber (env-scrub/*.s, assembled into env-scrub/blobs.ts) keeps only SENTRY_DSN,
 * CIRRUS_SENTRY_TAGS, SUDO_UID and SUDO_GID: every other environment entry leaves the envp array
 * and has its bytes zeroed. It is wired in where the operating system hands control to the
 * executable, ahead of Bun's own code:
 * - ELF (Linux): the ELF entry point. The scrubber sits in the zero padding just before .text,
 *   the executable PT_LOAD is extended back over it, e_entry points at it, and it jumps on to
 *   the original _start. Only the dynamic loader and the system libraries' constructors run
 *   earlier; glibc's loader ignores LD_* and other unsafe variables in a setuid process.
 * - Mach-O (macOS): the image's first static initializer (__TEXT,__init_offsets[0]), which dyld
 *   calls with (argc, argv, envp, apple, vars) before every other initializer and main of the
 *   executable. The scrubber sits in the zero padding at the end of __TEXT and tail-calls the
 *   original initializer. dyld itself drops DYLD_* for a setuid process.
 *
 * Patching happens before `bun build --compile`, which appends softnet's code and signs the
 * result (darwin): the ad-hoc signature covers the patched bytes. inspectHardening() proves the
 * hook on a finished artifact's bytes.
 */
import { Elf64, EM_AARCH64, EM_X86_64, PF_X, PT_LOAD } from "./elf.ts";
import { ENV_SCRUB_BLOBS, type EnvScrubBlob } from "./env-scrub/blobs.ts";
import {
  CPU_TYPE_ARM64,
  CPU_TYPE_X86_64,
  cpuName,
  MachO,
  S_INIT_FUNC_OFFSETS,
  S_MOD_INIT_FUNC_POINTERS,
  SECTION_TYPE,
  slices,
} from "./macho.ts";

type Arch = "x86_64" | "aarch64";

function blobBytes(arch: Arch): Uint8Array {
  return new Uint8Array(Buffer.from(ENV_SCRUB_BLOBS[arch].hex, "hex"));
}

/** The names the scrubber lets through, read from a blob's allowlist. */
export function allowlistOf(blob: Uint8Array, layout: EnvScrubBlob): string[] {
  const names: string[] = [];
  let at = layout.allowlist;
  while (at < blob.length && blob[at] !== 0) {
    let end = at;
    while (blob[end] !== 0) end++;
    names.push(Buffer.from(blob.subarray(at, end)).toString("latin1").replace(/=$/, ""));
    at = end + 1;
  }
  return names;
}

/** Encodes a jump at `from` to `to` (both addresses or both image offsets) into `blob` at `at`. */
function writeJump(arch: Arch, blob: Uint8Array, at: number, from: number, to: number): void {
  const view = new DataView(blob.buffer, blob.byteOffset, blob.byteLength);
  if (arch === "x86_64") {
    if (blob[at] !== 0xe9) throw new Error("env-scrub: no jmp rel32 where expected");
    const displacement = to - (from + 5);
    if (displacement < -(2 ** 31) || displacement >= 2 ** 31) throw new Error("env-scrub: jump out of range");
    view.setInt32(at + 1, displacement, true);
  } else {
    const delta = to - from;
    if (delta % 4 !== 0 || delta < -(2 ** 27) || delta >= 2 ** 27)
      throw new Error("env-scrub: branch out of range");
    view.setUint32(at, (0x14000000 | ((delta / 4) & 0x03ffffff)) >>> 0, true);
  }
}

/** Where a jump written by writeJump() goes. */
function readJump(arch: Arch, bytes: Uint8Array, at: number, from: number): number | undefined {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (arch === "x86_64") {
    if (bytes[at] !== 0xe9) return undefined;
    return from + 5 + view.getInt32(at + 1, true);
  }
  const word = view.getUint32(at, true);
  if (word >>> 26 !== 0b000101) return undefined;
  const imm26 = word & 0x03ffffff;
  return from + ((imm26 << 6) >> 6) * 4;
}

/** The blob with both jumps zeroed, to compare an artifact's copy with ours. */
function withoutJumps(arch: Arch, bytes: Uint8Array): Uint8Array {
  const copy = bytes.slice();
  const layout = ENV_SCRUB_BLOBS[arch];
  for (const at of [layout.elfJump, layout.machoJump]) {
    if (arch === "x86_64") copy.set([0xe9, 0, 0, 0, 0], at);
    else copy.set([0, 0, 0, 0x14], at);
  }
  return copy;
}

function allZero(bytes: Uint8Array): boolean {
  return bytes.every((byte) => byte === 0);
}

export interface HardeningReport {
  format: "elf" | "macho";
  arch: Arch;
  /** File offset (in the slice) and address or image offset of the scrubber. */
  stubFileOffset: number;
  stubAddress: number;
  /** The entry point or initializer that now runs the scrubber first, and where it continues. */
  hookedAt: string;
  originalTarget: number;
}

/** Patches a Bun runtime (ELF, or thin Mach-O) in place. Throws if it is already patched. */
export function hardenRuntime(bytes: Uint8Array): HardeningReport {
  if (Elf64.is(bytes)) return hardenElf(bytes);
  if (MachO.isThin(bytes)) return hardenMachO(bytes);
  throw new Error("not an ELF or thin Mach-O Bun runtime");
}

function elfArch(elf: Elf64): Arch {
  if (elf.machine === EM_X86_64) return "x86_64";
  if (elf.machine === EM_AARCH64) return "aarch64";
  throw new Error(`unsupported ELF machine ${elf.machine}`);
}

function hardenElf(bytes: Uint8Array): HardeningReport {
  const elf = new Elf64(bytes);
  const arch = elfArch(elf);
  const layout = ENV_SCRUB_BLOBS[arch];
  const blob = blobBytes(arch);
  const entry = elf.entry;
  const loads = elf.programHeaders().filter((header) => header.type === PT_LOAD);
  const text = loads.find(
    (header) => header.flags & PF_X && entry >= header.vaddr && entry < header.vaddr + header.filesz,
  );
  if (!text) throw new Error("ELF: the entry point is not in an executable PT_LOAD");
  if (entry !== text.vaddr)
    throw new Error("ELF: the entry point is not at the start of its segment (already patched?)");
  // Bun's runtimes start .text with _start, the original e_entry (.symtab does not name it).
  const start = elf.symbol("_start") ?? elf.sections().find((section) => section.name === ".text")?.addr;
  if (start !== entry) throw new Error("ELF: e_entry is not _start at the start of .text (already patched?)");
  // The file bytes just before the executable segment: after the previous segment's data, zero.
  const previousEnd = Math.max(
    0,
    ...loads.filter((header) => header.offset < text.offset).map((header) => header.offset + header.filesz),
  );
  const stubFileOffset = Math.floor((text.offset - blob.length) / 16) * 16;
  if (stubFileOffset < previousEnd)
    throw new Error("ELF: no room for the scrubber before the executable segment");
  if (!allZero(bytes.subarray(stubFileOffset, text.offset))) throw new Error("ELF: the padding is not empty");
  for (const section of elf.sections()) {
    if (section.size > 0 && section.offset < text.offset && section.offset + section.size > stubFileOffset) {
      if (section.type !== 8 /* SHT_NOBITS */) throw new Error(`ELF: ${section.name} overlaps the padding`);
    }
  }
  const delta = text.offset - stubFileOffset;
  const stubAddress = text.vaddr - delta;
  // Extend the executable segment back over the scrubber; its pages must not reach the previous
  // segment's (offset and address move together, so their congruence modulo p_align holds).
  for (const other of loads) {
    if (other.index === text.index) continue;
    const otherEnd = other.vaddr + other.memsz;
    const pageStart = Math.floor(stubAddress / text.align) * text.align;
    if (otherEnd > pageStart && other.vaddr < text.vaddr + text.memsz) {
      throw new Error("ELF: extending the executable segment would overlap another segment's pages");
    }
  }
  const patched = blob.slice();
  writeJump(arch, patched, layout.elfJump, stubAddress + layout.elfJump, entry);
  bytes.set(patched, stubFileOffset);
  elf.writeProgramHeader({
    ...text,
    offset: text.offset - delta,
    vaddr: text.vaddr - delta,
    paddr: text.paddr - delta,
    filesz: text.filesz + delta,
    memsz: text.memsz + delta,
  });
  elf.entry = stubAddress + layout.elfEntry;
  return { format: "elf", arch, stubFileOffset, stubAddress, hookedAt: "e_entry", originalTarget: entry };
}

function machoArch(macho: MachO): Arch {
  if (macho.cputype === CPU_TYPE_X86_64) return "x86_64";
  if (macho.cputype === CPU_TYPE_ARM64) return "aarch64";
  throw new Error(`unsupported Mach-O ${cpuName(macho.cputype)}`);
}

function initOffsetsSection(macho: MachO) {
  const sections = macho.segments().flatMap((segment) => segment.sections);
  if (sections.some((section) => (section.flags & SECTION_TYPE) === S_MOD_INIT_FUNC_POINTERS)) {
    // Pointer initializers would need their own hook; Bun's runtimes have none (checked here).
    throw new Error("Mach-O: __mod_init_func initializers are not supported");
  }
  const init = sections.filter((section) => (section.flags & SECTION_TYPE) === S_INIT_FUNC_OFFSETS);
  if (init.length !== 1 || init[0]!.segname !== "__TEXT" || init[0]!.size < 4) {
    throw new Error("Mach-O: expected one __TEXT,__init_offsets section");
  }
  return init[0]!;
}

function hardenMachO(bytes: Uint8Array): HardeningReport {
  const macho = new MachO(bytes);
  const arch = machoArch(macho);
  const layout = ENV_SCRUB_BLOBS[arch];
  const blob = blobBytes(arch);
  const text = macho.segment("__TEXT");
  if (text?.fileoff !== 0 || (text.initprot & 4) === 0) throw new Error("Mach-O: unexpected __TEXT");
  const init = initOffsetsSection(macho);
  const lastEnd = Math.max(...text.sections.map((section) => section.addr + section.size));
  const stubAddress = Math.ceil(lastEnd / 16) * 16 + 16;
  const stubOffset = stubAddress - text.vmaddr; // image offset == file offset in __TEXT
  if (stubOffset + blob.length > text.filesize) throw new Error("Mach-O: no room at the end of __TEXT");
  if (!allZero(bytes.subarray(stubOffset, stubOffset + blob.length)))
    throw new Error("Mach-O: padding not empty");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const original = view.getUint32(init.offset, true);
  const textSection = text.sections.find((section) => section.sectname === "__text");
  if (!textSection) throw new Error("Mach-O: no __TEXT,__text");
  const inText = (offset: number) =>
    offset >= textSection.addr - text.vmaddr && offset < textSection.addr - text.vmaddr + textSection.size;
  if (!inText(original)) throw new Error("Mach-O: the first initializer is not in __text (already patched?)");
  const patched = blob.slice();
  writeJump(arch, patched, layout.machoJump, stubOffset + layout.machoJump, original);
  bytes.set(patched, stubOffset);
  view.setUint32(init.offset, stubOffset + layout.machoInit, true);
  return {
    format: "macho",
    arch,
    stubFileOffset: stubOffset,
    stubAddress: stubOffset,
    hookedAt: "__init_offsets[0]",
    originalTarget: original,
  };
}

export interface HardeningProof {
  /** "linux x86_64", "darwin arm64 (slice 2 of 2)", ... */
  what: string;
  hooked: boolean;
  /** The names the scrubber keeps, read back from the artifact. */
  allowlist: string[];
  /** Why `hooked` is false, or oddities. */
  problems: string[];
  /** Where the scrubber continues: the runtime's _start (ELF) or original initializer (Mach-O). */
  continuesTo?: string;
}

/**
 * Proves, from an artifact's bytes alone, that every slice runs the scrubber first: the entry
 * point (ELF) or first initializer (Mach-O) lands on a byte-exact copy of env-scrub/blobs.ts,
 * whose jump goes on to the runtime's own code.
 */
export function inspectHardening(bytes: Uint8Array): HardeningProof[] {
  if (Elf64.is(bytes)) return [inspectElf(bytes)];
  const all = slices(bytes);
  return all.map((slice, index) => {
    const thin = bytes.subarray(slice.offset, slice.offset + slice.size);
    const proof = inspectMachO(thin);
    if (all.length > 1) proof.what += ` (slice ${index + 1} of ${all.length})`;
    return proof;
  });
}

function inspectElf(bytes: Uint8Array): HardeningProof {
  const elf = new Elf64(bytes);
  const arch = elfArch(elf);
  const layout = ENV_SCRUB_BLOBS[arch];
  const blob = blobBytes(arch);
  const proof: HardeningProof = { what: `linux ${arch}`, hooked: false, allowlist: [], problems: [] };
  const stubAddress = elf.entry - layout.elfEntry;
  const at = elf.fileOffsetOf(stubAddress);
  const segment = elf
    .programHeaders()
    .find(
      (header) =>
        header.type === PT_LOAD && stubAddress >= header.vaddr && stubAddress < header.vaddr + header.filesz,
    );
  if (at === undefined || !segment || !(segment.flags & PF_X)) {
    proof.problems.push("e_entry is not in an executable segment");
    return proof;
  }
  const copy = bytes.subarray(at, at + blob.length);
  if (!equal(withoutJumps(arch, copy), withoutJumps(arch, blob))) {
    proof.problems.push(`e_entry (0x${elf.entry.toString(16)}) does not run the scrubber`);
    return proof;
  }
  const target = readJump(arch, copy, layout.elfJump, stubAddress + layout.elfJump);
  const start = elf.symbol("_start") ?? elf.sections().find((section) => section.name === ".text")?.addr;
  if (target === undefined || target !== start) {
    proof.problems.push("the scrubber does not continue to _start (the start of .text)");
    return proof;
  }
  proof.continuesTo = `_start at 0x${target.toString(16)}`;
  proof.allowlist = allowlistOf(copy, layout);
  proof.hooked = true;
  return proof;
}

function inspectMachO(bytes: Uint8Array): HardeningProof {
  const macho = new MachO(bytes);
  const arch = machoArch(macho);
  const layout = ENV_SCRUB_BLOBS[arch];
  const blob = blobBytes(arch);
  const proof: HardeningProof = {
    what: `darwin ${cpuName(macho.cputype)}`,
    hooked: false,
    allowlist: [],
    problems: [],
  };
  const text = macho.segment("__TEXT");
  if (!text) {
    proof.problems.push("no __TEXT");
    return proof;
  }
  const init = initOffsetsSection(macho);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const first = view.getUint32(init.offset, true);
  const stubOffset = first - layout.machoInit;
  if (stubOffset < 0 || stubOffset + blob.length > text.filesize) {
    proof.problems.push("__init_offsets[0] is not in __TEXT");
    return proof;
  }
  const copy = bytes.subarray(stubOffset, stubOffset + blob.length);
  if (!equal(withoutJumps(arch, copy), withoutJumps(arch, blob))) {
    proof.problems.push(`__init_offsets[0] (0x${first.toString(16)}) does not run the scrubber`);
    return proof;
  }
  const target = readJump(arch, copy, layout.machoJump, stubOffset + layout.machoJump);
  const textSection = text.sections.find((section) => section.sectname === "__text");
  if (
    target === undefined ||
    !textSection ||
    target < textSection.addr - text.vmaddr ||
    target >= textSection.addr - text.vmaddr + textSection.size
  ) {
    proof.problems.push("the scrubber does not continue into __text");
    return proof;
  }
  proof.continuesTo = `the original initializer at image offset 0x${target.toString(16)}`;
  proof.allowlist = allowlistOf(copy, layout);
  proof.hooked = true;
  return proof;
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((byte, index) => byte === b[index]);
}
