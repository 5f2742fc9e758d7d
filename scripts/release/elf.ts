/**
 * Just enough ELF64 (little-endian) to read and patch a Bun runtime: the header, the program
 * headers and the section headers, as views over the file's bytes (edits write through).
 */

export const PT_LOAD = 1;
export const PF_X = 1;
export const EM_X86_64 = 62;
export const EM_AARCH64 = 183;

export interface ProgramHeader {
  index: number;
  type: number;
  flags: number;
  offset: number;
  vaddr: number;
  paddr: number;
  filesz: number;
  memsz: number;
  align: number;
}

export interface SectionHeader {
  name: string;
  type: number;
  flags: number;
  addr: number;
  offset: number;
  size: number;
}

export class Elf64 {
  readonly view: DataView;

  constructor(readonly bytes: Uint8Array) {
    if (bytes[0] !== 0x7f || bytes[1] !== 0x45 || bytes[2] !== 0x4c || bytes[3] !== 0x46) {
      throw new Error("not an ELF file");
    }
    if (bytes[4] !== 2 || bytes[5] !== 1) throw new Error("not a little-endian 64-bit ELF file");
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  static is(bytes: Uint8Array): boolean {
    return bytes[0] === 0x7f && bytes[1] === 0x45 && bytes[2] === 0x4c && bytes[3] === 0x46;
  }

  get machine(): number {
    return this.view.getUint16(18, true);
  }

  get entry(): number {
    return Number(this.view.getBigUint64(24, true));
  }

  set entry(value: number) {
    this.view.setBigUint64(24, BigInt(value), true);
  }

  programHeaders(): ProgramHeader[] {
    const phoff = Number(this.view.getBigUint64(32, true));
    const entsize = this.view.getUint16(54, true);
    const count = this.view.getUint16(56, true);
    const headers: ProgramHeader[] = [];
    for (let index = 0; index < count; index++) {
      const at = phoff + index * entsize;
      headers.push({
        index,
        type: this.view.getUint32(at, true),
        flags: this.view.getUint32(at + 4, true),
        offset: Number(this.view.getBigUint64(at + 8, true)),
        vaddr: Number(this.view.getBigUint64(at + 16, true)),
        paddr: Number(this.view.getBigUint64(at + 24, true)),
        filesz: Number(this.view.getBigUint64(at + 32, true)),
        memsz: Number(this.view.getBigUint64(at + 40, true)),
        align: Number(this.view.getBigUint64(at + 48, true)),
      });
    }
    return headers;
  }

  writeProgramHeader(header: ProgramHeader): void {
    const phoff = Number(this.view.getBigUint64(32, true));
    const at = phoff + header.index * this.view.getUint16(54, true);
    this.view.setUint32(at, header.type, true);
    this.view.setUint32(at + 4, header.flags, true);
    this.view.setBigUint64(at + 8, BigInt(header.offset), true);
    this.view.setBigUint64(at + 16, BigInt(header.vaddr), true);
    this.view.setBigUint64(at + 24, BigInt(header.paddr), true);
    this.view.setBigUint64(at + 32, BigInt(header.filesz), true);
    this.view.setBigUint64(at + 40, BigInt(header.memsz), true);
    this.view.setBigUint64(at + 48, BigInt(header.align), true);
  }

  sections(): SectionHeader[] {
    const shoff = Number(this.view.getBigUint64(40, true));
    const entsize = this.view.getUint16(58, true);
    const count = this.view.getUint16(60, true);
    const strndx = this.view.getUint16(62, true);
    if (shoff === 0 || count === 0) return [];
    const raw = [];
    for (let index = 0; index < count; index++) {
      const at = shoff + index * entsize;
      raw.push({
        nameOffset: this.view.getUint32(at, true),
        type: this.view.getUint32(at + 4, true),
        flags: Number(this.view.getBigUint64(at + 8, true)),
        addr: Number(this.view.getBigUint64(at + 16, true)),
        offset: Number(this.view.getBigUint64(at + 24, true)),
        size: Number(this.view.getBigUint64(at + 32, true)),
      });
    }
    const names = raw[strndx]!;
    return raw.map((section) => ({
      name: cString(this.bytes, names.offset + section.nameOffset),
      type: section.type,
      flags: section.flags,
      addr: section.addr,
      offset: section.offset,
      size: section.size,
    }));
  }

  /** The value of a symbol from .symtab (Bun's runtimes are not stripped), or undefined. */
  symbol(name: string): number | undefined {
    const sections = this.sections();
    const symtab = sections.find((section) => section.name === ".symtab");
    const strtab = sections.find((section) => section.name === ".strtab");
    if (!symtab || !strtab) return undefined;
    for (let at = symtab.offset; at < symtab.offset + symtab.size; at += 24) {
      const nameOffset = this.view.getUint32(at, true);
      if (cString(this.bytes, strtab.offset + nameOffset) === name) {
        return Number(this.view.getBigUint64(at + 8, true));
      }
    }
    return undefined;
  }

  /** The file offset holding virtual address `vaddr`, through the PT_LOAD that maps it. */
  fileOffsetOf(vaddr: number): number | undefined {
    for (const header of this.programHeaders()) {
      if (header.type === PT_LOAD && vaddr >= header.vaddr && vaddr < header.vaddr + header.filesz) {
        return header.offset + (vaddr - header.vaddr);
      }
    }
    return undefined;
  }
}

export function cString(bytes: Uint8Array, at: number): string {
  let end = at;
  while (end < bytes.length && bytes[end] !== 0) end++;
  return Buffer.from(bytes.subarray(at, end)).toString("latin1");
}
