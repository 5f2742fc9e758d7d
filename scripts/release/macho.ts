/**
 * Just enough Mach-O to read, patch and sign softnet's darwin artifacts: fat (universal) files
 * and their slices, 64-bit little-endian thin files, load commands, segments and sections. Views
 * over the file's bytes: edits write through.
 */

export const MH_MAGIC_64 = 0xfeedfacf;
export const FAT_MAGIC = 0xcafebabe;
export const FAT_MAGIC_64 = 0xcafebabf;
export const CPU_TYPE_X86_64 = 0x01000007;
export const CPU_TYPE_ARM64 = 0x0100000c;
export const LC_SEGMENT_64 = 0x19;
export const LC_CODE_SIGNATURE = 0x1d;
export const LC_MAIN = 0x80000028;
export const S_MOD_INIT_FUNC_POINTERS = 0x9;
export const S_INIT_FUNC_OFFSETS = 0x16;
export const SECTION_TYPE = 0xff;

export interface Slice {
  cputype: number;
  cpusubtype: number;
  /** Where the thin Mach-O starts in the file, and its length. */
  offset: number;
  size: number;
  /** log2 of the slice alignment in a fat file (0 for a thin file). */
  align: number;
}

export interface Section {
  sectname: string;
  segname: string;
  addr: number;
  size: number;
  offset: number;
  flags: number;
  /** Where this section's header sits in the slice (to patch it). */
  headerOffset: number;
}

export interface Segment {
  segname: string;
  vmaddr: number;
  vmsize: number;
  fileoff: number;
  filesize: number;
  maxprot: number;
  initprot: number;
  sections: Section[];
  commandOffset: number;
}

export interface LoadCommand {
  cmd: number;
  cmdsize: number;
  /** Offset of the command in the slice. */
  offset: number;
}

export function cpuName(cputype: number): string {
  if (cputype === CPU_TYPE_ARM64) return "arm64";
  if (cputype === CPU_TYPE_X86_64) return "x86_64";
  return `cputype 0x${cputype.toString(16)}`;
}

/** The slices of a fat file, or the one slice of a thin file. */
export function slices(bytes: Uint8Array): Slice[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const magic = view.getUint32(0, false);
  if (magic === FAT_MAGIC || magic === FAT_MAGIC_64) {
    const count = view.getUint32(4, false);
    const result: Slice[] = [];
    for (let index = 0; index < count; index++) {
      if (magic === FAT_MAGIC) {
        const at = 8 + index * 20;
        result.push({
          cputype: view.getUint32(at, false),
          cpusubtype: view.getUint32(at + 4, false),
          offset: view.getUint32(at + 8, false),
          size: view.getUint32(at + 12, false),
          align: view.getUint32(at + 16, false),
        });
      } else {
        const at = 8 + index * 32;
        result.push({
          cputype: view.getUint32(at, false),
          cpusubtype: view.getUint32(at + 4, false),
          offset: Number(view.getBigUint64(at + 8, false)),
          size: Number(view.getBigUint64(at + 16, false)),
          align: view.getUint32(at + 24, false),
        });
      }
    }
    for (const slice of result) {
      if (slice.offset + slice.size > bytes.length)
        throw new Error("fat slice runs past the end of the file");
    }
    return result;
  }
  if (view.getUint32(0, true) === MH_MAGIC_64) {
    return [
      {
        cputype: view.getUint32(4, true),
        cpusubtype: view.getUint32(8, true),
        offset: 0,
        size: bytes.length,
        align: 0,
      },
    ];
  }
  throw new Error("not a 64-bit Mach-O or fat file");
}

/** A thin 64-bit little-endian Mach-O (one slice of a fat file, or a whole file). */
export class MachO {
  readonly view: DataView;

  constructor(readonly bytes: Uint8Array) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    if (this.view.getUint32(0, true) !== MH_MAGIC_64) throw new Error("not a 64-bit little-endian Mach-O");
  }

  static isThin(bytes: Uint8Array): boolean {
    return (
      bytes.length >= 4 && new DataView(bytes.buffer, bytes.byteOffset, 4).getUint32(0, true) === MH_MAGIC_64
    );
  }

  get cputype(): number {
    return this.view.getUint32(4, true);
  }

  get cpusubtype(): number {
    return this.view.getUint32(8, true);
  }

  get filetype(): number {
    return this.view.getUint32(12, true);
  }

  get ncmds(): number {
    return this.view.getUint32(16, true);
  }

  get sizeofcmds(): number {
    return this.view.getUint32(20, true);
  }

  loadCommands(): LoadCommand[] {
    const commands: LoadCommand[] = [];
    let at = 32;
    const end = 32 + this.sizeofcmds;
    for (let index = 0; index < this.ncmds; index++) {
      const cmd = this.view.getUint32(at, true);
      const cmdsize = this.view.getUint32(at + 4, true);
      if (cmdsize < 8 || at + cmdsize > end) throw new Error(`malformed load command ${index}`);
      commands.push({ cmd, cmdsize, offset: at });
      at += cmdsize;
    }
    return commands;
  }

  command(cmd: number): LoadCommand | undefined {
    return this.loadCommands().find((command) => command.cmd === cmd);
  }

  segments(): Segment[] {
    return this.loadCommands()
      .filter((command) => command.cmd === LC_SEGMENT_64)
      .map((command) => {
        const at = command.offset;
        const nsects = this.view.getUint32(at + 64, true);
        const segment: Segment = {
          segname: fixedString(this.bytes, at + 8, 16),
          vmaddr: Number(this.view.getBigUint64(at + 24, true)),
          vmsize: Number(this.view.getBigUint64(at + 32, true)),
          fileoff: Number(this.view.getBigUint64(at + 40, true)),
          filesize: Number(this.view.getBigUint64(at + 48, true)),
          maxprot: this.view.getUint32(at + 56, true),
          initprot: this.view.getUint32(at + 60, true),
          sections: [],
          commandOffset: at,
        };
        for (let index = 0; index < nsects; index++) {
          const s = at + 72 + index * 80;
          segment.sections.push({
            sectname: fixedString(this.bytes, s, 16),
            segname: fixedString(this.bytes, s + 16, 16),
            addr: Number(this.view.getBigUint64(s + 32, true)),
            size: Number(this.view.getBigUint64(s + 40, true)),
            offset: this.view.getUint32(s + 48, true),
            flags: this.view.getUint32(s + 64, true),
            headerOffset: s,
          });
        }
        return segment;
      });
  }

  segment(name: string): Segment | undefined {
    return this.segments().find((segment) => segment.segname === name);
  }

  /** LC_CODE_SIGNATURE's data offset and size, relative to this slice. */
  codeSignature(): { dataoff: number; datasize: number } | undefined {
    const command = this.command(LC_CODE_SIGNATURE);
    if (!command) return undefined;
    return {
      dataoff: this.view.getUint32(command.offset + 8, true),
      datasize: this.view.getUint32(command.offset + 12, true),
    };
  }

  /** Offset in this slice of a virtual address, through the segment that maps it from the file. */
  fileOffsetOf(vmaddr: number): number | undefined {
    for (const segment of this.segments()) {
      if (vmaddr >= segment.vmaddr && vmaddr < segment.vmaddr + segment.filesize) {
        return segment.fileoff + (vmaddr - segment.vmaddr);
      }
    }
    return undefined;
  }
}

function fixedString(bytes: Uint8Array, at: number, length: number): string {
  let end = at;
  while (end < at + length && bytes[end] !== 0) end++;
  return Buffer.from(bytes.subarray(at, end)).toString("latin1");
}

/**
 * A universal (fat) file from thin Mach-O slices, laid out as `lipo -create` (llvm-lipo) does it:
 * a big-endian fat_header and fat_arch table, slices ordered by alignment, each at a multiple of
 * its alignment (2^14 for arm64, the page size there; 2^12 for x86_64). The slices are copied
 * byte for byte, so their code signatures stay valid.
 */
export function createFat(thinFiles: Uint8Array[]): Uint8Array {
  const inputs = thinFiles.map((thin) => {
    const macho = new MachO(thin);
    return {
      thin,
      cputype: macho.cputype,
      cpusubtype: macho.cpusubtype,
      align: macho.cputype === CPU_TYPE_ARM64 ? 14 : 12,
    };
  });
  if (new Set(inputs.map((input) => input.cputype)).size !== inputs.length) {
    throw new Error("two slices of the same architecture");
  }
  inputs.sort((a, b) => a.align - b.align);
  let offset = 8 + 20 * inputs.length;
  const entries = inputs.map((input) => {
    const alignment = 2 ** input.align;
    offset = Math.ceil(offset / alignment) * alignment;
    const entry = { ...input, offset, size: input.thin.length };
    offset += input.thin.length;
    return entry;
  });
  const fat = new Uint8Array(offset);
  const view = new DataView(fat.buffer);
  view.setUint32(0, FAT_MAGIC, false);
  view.setUint32(4, entries.length, false);
  entries.forEach((entry, index) => {
    const at = 8 + index * 20;
    view.setUint32(at, entry.cputype, false);
    view.setUint32(at + 4, entry.cpusubtype, false);
    view.setUint32(at + 8, entry.offset, false);
    view.setUint32(at + 12, entry.size, false);
    view.setUint32(at + 16, entry.align, false);
    fat.set(entry.thin, entry.offset);
  });
  return fat;
}
