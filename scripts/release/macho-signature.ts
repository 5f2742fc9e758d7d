#!/usr/bin/env bun
/**
 * Verifies (and can rewrite) the code signature of every slice of a Mach-O file: the
 * LC_CODE_SIGNATURE load command, the SuperBlob it points to, each CodeDirectory in it (hash type,
 * page size, code limit, special slots), every page hash, and the special-slot hashes of the
 * blobs that are present (requirements, entitlements, DER entitlements, the embedded Info.plist).
 * Bun has shipped darwin executables with broken signatures, which macOS kills on launch; CI runs
 * this on every darwin artifact.
 *
 *   bun scripts/release/macho-signature.ts dist/softnet-darwin-*      verify; exit 1 on a mismatch
 *   bun scripts/release/macho-signature.ts --resign FILE              rewrite the hashes in place
 *
 * Formats: xnu's osfmk/kern/cs_blobs.h. Everything in the signature is big-endian.
 */
import { createHash } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { cpuName, MachO, slices } from "./macho.ts";

export const CSMAGIC_EMBEDDED_SIGNATURE = 0xfade0cc0;
export const CSMAGIC_CODEDIRECTORY = 0xfade0c02;
export const CSMAGIC_REQUIREMENTS = 0xfade0c01;
export const CSMAGIC_EMBEDDED_ENTITLEMENTS = 0xfade7171;
export const CSMAGIC_EMBEDDED_DER_ENTITLEMENTS = 0xfade7172;
export const CSMAGIC_BLOBWRAPPER = 0xfade0b01;

export const CSSLOT_CODEDIRECTORY = 0;
export const CSSLOT_INFOSLOT = 1;
export const CSSLOT_REQUIREMENTS = 2;
export const CSSLOT_RESOURCEDIR = 3;
export const CSSLOT_APPLICATION = 4;
export const CSSLOT_ENTITLEMENTS = 5;
export const CSSLOT_DER_ENTITLEMENTS = 7;
export const CSSLOT_ALTERNATE_CODEDIRECTORIES = 0x1000;
export const CSSLOT_SIGNATURESLOT = 0x10000;

export const CS_ADHOC = 0x2;

const HASH_TYPES: Record<number, { name: string; algorithm: string; size: number }> = {
  1: { name: "sha1", algorithm: "sha1", size: 20 },
  2: { name: "sha256", algorithm: "sha256", size: 32 },
  3: { name: "sha256-truncated", algorithm: "sha256", size: 20 },
  4: { name: "sha384", algorithm: "sha384", size: 48 },
};

const SLOT_NAMES: Record<number, string> = {
  1: "Info.plist",
  2: "requirements",
  3: "resource directory",
  4: "application",
  5: "entitlements",
  6: "rep-specific",
  7: "DER entitlements",
};

export interface CodeDirectoryReport {
  /** Index entry type in the SuperBlob: 0, or 0x1000+ for alternate code directories. */
  slotType: number;
  version: number;
  flags: number;
  identifier: string;
  teamId?: string;
  hashType: string;
  hashSize: number;
  pageSize: number;
  codeLimit: number;
  nCodeSlots: number;
  nSpecialSlots: number;
  execSegBase?: number;
  execSegLimit?: number;
  /** Code pages whose hash did not match (indices). */
  badPages: number[];
  /** Special slots: what was checked and how it came out. */
  specialSlots: { slot: number; name: string; status: "ok" | "mismatch" | "absent" | "unverifiable" }[];
  /** The CodeDirectory's own hash (the cdhash), hex, for the record. */
  cdhash: string;
}

export interface SliceReport {
  arch: string;
  offset: number;
  size: number;
  signed: boolean;
  codeDirectories: CodeDirectoryReport[];
  /** The CMS signature blob: absent, or empty (ad-hoc), or its size. */
  cms: string;
  errors: string[];
}

function hash(hashType: number, data: Uint8Array): Uint8Array {
  const type = HASH_TYPES[hashType];
  if (!type) throw new Error(`unknown hash type ${hashType}`);
  return new Uint8Array(createHash(type.algorithm).update(data).digest()).subarray(0, type.size);
}

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString("hex");
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((byte, index) => byte === b[index]);
}

function cString(bytes: Uint8Array, at: number): string {
  let end = at;
  while (end < bytes.length && bytes[end] !== 0) end++;
  return Buffer.from(bytes.subarray(at, end)).toString("utf8");
}

interface BlobIndexEntry {
  type: number;
  offset: number;
  magic: number;
  length: number;
}

/** The SuperBlob's index, each entry with its blob's magic and length. */
function superBlobIndex(signature: Uint8Array): BlobIndexEntry[] {
  const view = new DataView(signature.buffer, signature.byteOffset, signature.byteLength);
  if (view.getUint32(0, false) !== CSMAGIC_EMBEDDED_SIGNATURE)
    throw new Error("no embedded-signature SuperBlob");
  const length = view.getUint32(4, false);
  if (length > signature.length) throw new Error("SuperBlob longer than LC_CODE_SIGNATURE's data");
  const count = view.getUint32(8, false);
  const entries: BlobIndexEntry[] = [];
  for (let index = 0; index < count; index++) {
    const type = view.getUint32(12 + index * 8, false);
    const offset = view.getUint32(16 + index * 8, false);
    if (offset + 8 > length) throw new Error(`blob ${index} starts outside the SuperBlob`);
    const blobLength = view.getUint32(offset + 4, false);
    if (offset + blobLength > length) throw new Error(`blob ${index} runs past the SuperBlob`);
    entries.push({ type, offset, magic: view.getUint32(offset, false), length: blobLength });
  }
  return entries;
}

/** The embedded Info.plist (__TEXT,__info_plist) of a command-line tool, if any. */
function infoPlist(macho: MachO): Uint8Array | undefined {
  for (const segment of macho.segments()) {
    for (const section of segment.sections) {
      if (section.sectname === "__info_plist")
        return macho.bytes.subarray(section.offset, section.offset + section.size);
    }
  }
  return undefined;
}

interface CodeDirectoryFields {
  version: number;
  flags: number;
  hashOffset: number;
  identOffset: number;
  nSpecialSlots: number;
  nCodeSlots: number;
  codeLimit: number;
  hashSize: number;
  hashType: number;
  pageSizeLog2: number;
  teamOffset: number;
  execSegBase?: number;
  execSegLimit?: number;
}

function readCodeDirectory(cd: Uint8Array): CodeDirectoryFields {
  const view = new DataView(cd.buffer, cd.byteOffset, cd.byteLength);
  if (view.getUint32(0, false) !== CSMAGIC_CODEDIRECTORY) throw new Error("bad CodeDirectory magic");
  const version = view.getUint32(8, false);
  let codeLimit = view.getUint32(32, false);
  if (version >= 0x20300 && codeLimit === 0) codeLimit = Number(view.getBigUint64(56, false));
  return {
    version,
    flags: view.getUint32(12, false),
    hashOffset: view.getUint32(16, false),
    identOffset: view.getUint32(20, false),
    nSpecialSlots: view.getUint32(24, false),
    nCodeSlots: view.getUint32(28, false),
    codeLimit,
    hashSize: cd[36]!,
    hashType: cd[37]!,
    pageSizeLog2: cd[39]!,
    teamOffset: version >= 0x20200 ? view.getUint32(48, false) : 0,
    execSegBase: version >= 0x20400 ? Number(view.getBigUint64(64, false)) : undefined,
    execSegLimit: version >= 0x20400 ? Number(view.getBigUint64(72, false)) : undefined,
  };
}

/** The data a special slot's hash covers, if this signature or binary has it. */
function specialSlotData(
  slot: number,
  signature: Uint8Array,
  index: BlobIndexEntry[],
  macho: MachO,
): Uint8Array | undefined {
  if (slot === CSSLOT_INFOSLOT) return infoPlist(macho);
  const entry = index.find((candidate) => candidate.type === slot);
  if (!entry) return undefined;
  return signature.subarray(entry.offset, entry.offset + entry.length);
}

/** Verifies one thin Mach-O. Never throws for a bad signature: errors are listed. */
export function verifySlice(thin: Uint8Array, offset = 0): SliceReport {
  const macho = new MachO(thin);
  const report: SliceReport = {
    arch: cpuName(macho.cputype),
    offset,
    size: thin.length,
    signed: false,
    codeDirectories: [],
    cms: "absent",
    errors: [],
  };
  const location = macho.codeSignature();
  if (!location) {
    report.errors.push("no LC_CODE_SIGNATURE");
    return report;
  }
  report.signed = true;
  if (location.dataoff + location.datasize > thin.length) {
    report.errors.push("the signature runs past the end of the slice");
    return report;
  }
  const linkedit = macho.segment("__LINKEDIT");
  if (
    !linkedit ||
    location.dataoff < linkedit.fileoff ||
    location.dataoff + location.datasize > linkedit.fileoff + linkedit.filesize
  ) {
    report.errors.push("the signature is not inside __LINKEDIT");
  }
  const signature = thin.subarray(location.dataoff, location.dataoff + location.datasize);
  let index: BlobIndexEntry[];
  try {
    index = superBlobIndex(signature);
  } catch (error) {
    report.errors.push((error as Error).message);
    return report;
  }
  const cms = index.find((entry) => entry.type === CSSLOT_SIGNATURESLOT);
  if (cms) report.cms = cms.length <= 8 ? "empty (ad-hoc)" : `${cms.length} bytes`;
  const directories = index.filter(
    (entry) =>
      entry.type === CSSLOT_CODEDIRECTORY ||
      (entry.type >= CSSLOT_ALTERNATE_CODEDIRECTORIES && entry.type < CSSLOT_ALTERNATE_CODEDIRECTORIES + 5),
  );
  if (!directories.some((entry) => entry.type === CSSLOT_CODEDIRECTORY))
    report.errors.push("no CodeDirectory");
  for (const entry of directories) {
    const cd = signature.subarray(entry.offset, entry.offset + entry.length);
    const label = entry.type === 0 ? "CodeDirectory" : `alternate CodeDirectory 0x${entry.type.toString(16)}`;
    let fields: CodeDirectoryFields;
    try {
      fields = readCodeDirectory(cd);
    } catch (error) {
      report.errors.push(`${label}: ${(error as Error).message}`);
      continue;
    }
    const type = HASH_TYPES[fields.hashType];
    if (!type || type.size !== fields.hashSize) {
      report.errors.push(`${label}: unsupported hash type ${fields.hashType} / size ${fields.hashSize}`);
      continue;
    }
    const pageSize = fields.pageSizeLog2 === 0 ? fields.codeLimit : 2 ** fields.pageSizeLog2;
    const cdReport: CodeDirectoryReport = {
      slotType: entry.type,
      version: fields.version,
      flags: fields.flags,
      identifier: cString(cd, fields.identOffset),
      teamId: fields.teamOffset ? cString(cd, fields.teamOffset) : undefined,
      hashType: type.name,
      hashSize: fields.hashSize,
      pageSize,
      codeLimit: fields.codeLimit,
      nCodeSlots: fields.nCodeSlots,
      nSpecialSlots: fields.nSpecialSlots,
      execSegBase: fields.execSegBase,
      execSegLimit: fields.execSegLimit,
      badPages: [],
      specialSlots: [],
      cdhash: hex(hash(fields.hashType, cd)),
    };
    report.codeDirectories.push(cdReport);
    if (fields.codeLimit !== location.dataoff) {
      report.errors.push(
        `${label}: code limit ${fields.codeLimit} is not the signature's offset ${location.dataoff}`,
      );
    }
    const expectedSlots = Math.ceil(fields.codeLimit / pageSize);
    if (fields.nCodeSlots !== expectedSlots) {
      report.errors.push(`${label}: ${fields.nCodeSlots} code slots for ${expectedSlots} pages`);
    }
    if (fields.hashOffset + fields.nCodeSlots * fields.hashSize > cd.length) {
      report.errors.push(`${label}: hash slots run past the CodeDirectory`);
      continue;
    }
    if (fields.hashOffset < fields.nSpecialSlots * fields.hashSize) {
      report.errors.push(`${label}: special slots start before the CodeDirectory`);
      continue;
    }
    const text = macho.segment("__TEXT");
    if (
      fields.execSegLimit !== undefined &&
      text &&
      (fields.execSegBase !== text.fileoff || fields.execSegLimit !== text.filesize)
    ) {
      report.errors.push(
        `${label}: executable segment ${fields.execSegBase}+${fields.execSegLimit} is not __TEXT`,
      );
    }
    for (let page = 0; page < fields.nCodeSlots; page++) {
      const start = page * pageSize;
      const end = Math.min(start + pageSize, fields.codeLimit);
      const expected = cd.subarray(
        fields.hashOffset + page * fields.hashSize,
        fields.hashOffset + (page + 1) * fields.hashSize,
      );
      if (!equal(hash(fields.hashType, thin.subarray(start, end)), expected)) cdReport.badPages.push(page);
    }
    if (cdReport.badPages.length > 0) {
      const shown = cdReport.badPages.slice(0, 5).join(", ");
      report.errors.push(
        `${label}: ${cdReport.badPages.length} of ${fields.nCodeSlots} page hashes do not match (pages ${shown}${cdReport.badPages.length > 5 ? ", ..." : ""})`,
      );
    }
    for (let slot = 1; slot <= fields.nSpecialSlots; slot++) {
      const stored = cd.subarray(
        fields.hashOffset - slot * fields.hashSize,
        fields.hashOffset - (slot - 1) * fields.hashSize,
      );
      const name = SLOT_NAMES[slot] ?? `slot ${slot}`;
      const data = specialSlotData(slot, signature, index, macho);
      const zero = stored.every((byte) => byte === 0);
      if (data === undefined) {
        if (zero) {
          cdReport.specialSlots.push({ slot, name, status: "absent" });
        } else {
          cdReport.specialSlots.push({ slot, name, status: "unverifiable" });
          report.errors.push(
            `${label}: special slot ${slot} (${name}) has a hash but nothing to check it against`,
          );
        }
        continue;
      }
      const ok = equal(hash(fields.hashType, data), stored);
      cdReport.specialSlots.push({ slot, name, status: ok ? "ok" : "mismatch" });
      if (!ok) report.errors.push(`${label}: special slot ${slot} (${name}) hash does not match`);
    }
    // A blob the signature carries must be bound by this CodeDirectory's special slots.
    for (const bound of [CSSLOT_REQUIREMENTS, CSSLOT_ENTITLEMENTS, CSSLOT_DER_ENTITLEMENTS]) {
      if (index.some((candidate) => candidate.type === bound) && fields.nSpecialSlots < bound) {
        report.errors.push(`${label}: the ${SLOT_NAMES[bound]} blob is not covered by a special slot`);
      }
    }
  }
  return report;
}

/** Verifies every slice of a thin or fat Mach-O file. */
export function verifySignatures(bytes: Uint8Array): SliceReport[] {
  return slices(bytes).map((slice) =>
    verifySlice(bytes.subarray(slice.offset, slice.offset + slice.size), slice.offset),
  );
}

/**
 * Rewrites, in place, every page hash and every present special-slot hash of every
 * CodeDirectory of every slice, after bytes before the signature changed. The layout (code limit,
 * page count, blob sizes) must be the same as when the file was signed; an ad-hoc signature has
 * no CMS blob to redo. Returns how many hashes changed.
 */
export function resign(bytes: Uint8Array): number {
  let changed = 0;
  for (const slice of slices(bytes)) {
    const thin = bytes.subarray(slice.offset, slice.offset + slice.size);
    const macho = new MachO(thin);
    const location = macho.codeSignature();
    if (!location) throw new Error(`${cpuName(macho.cputype)}: not signed`);
    const signature = thin.subarray(location.dataoff, location.dataoff + location.datasize);
    const index = superBlobIndex(signature);
    const cms = index.find((entry) => entry.type === CSSLOT_SIGNATURESLOT);
    if (cms && cms.length > 8) throw new Error("a CMS (non-ad-hoc) signature cannot be redone here");
    // Alternate directories first, the primary last: none of them hashes another.
    const directories = index.filter(
      (entry) => entry.type === CSSLOT_CODEDIRECTORY || entry.type >= CSSLOT_ALTERNATE_CODEDIRECTORIES,
    );
    for (const entry of directories) {
      if (entry.type >= CSSLOT_SIGNATURESLOT) continue;
      const cd = signature.subarray(entry.offset, entry.offset + entry.length);
      const fields = readCodeDirectory(cd);
      if (fields.codeLimit !== location.dataoff) throw new Error("the code limit moved: sign again with Bun");
      const pageSize = fields.pageSizeLog2 === 0 ? fields.codeLimit : 2 ** fields.pageSizeLog2;
      const write = (at: number, digest: Uint8Array) => {
        if (!equal(cd.subarray(at, at + digest.length), digest)) {
          cd.set(digest, at);
          changed++;
        }
      };
      for (let page = 0; page < fields.nCodeSlots; page++) {
        const start = page * pageSize;
        const end = Math.min(start + pageSize, fields.codeLimit);
        write(fields.hashOffset + page * fields.hashSize, hash(fields.hashType, thin.subarray(start, end)));
      }
      for (let slot = 1; slot <= fields.nSpecialSlots; slot++) {
        const data = specialSlotData(slot, signature, index, macho);
        if (data) write(fields.hashOffset - slot * fields.hashSize, hash(fields.hashType, data));
      }
    }
  }
  return changed;
}

const CS_EXECSEG_MAIN_BINARY = 0x1;

/**
 * Replaces the code signature of a thin MH_EXECUTE Mach-O with a fresh ad-hoc one, as
 * `codesign --sign - --identifier ID` writes it: a SuperBlob with a CodeDirectory (version
 * 0x20400, SHA-256, 4 KiB pages, the executable segment = __TEXT), an empty requirement set
 * (special slot 2) and an empty CMS wrapper. The old signature must be the last thing in the file
 * (where ld and Bun put it); LC_CODE_SIGNATURE and __LINKEDIT are resized to the new one. Returns
 * the new file (a new array: its length changes).
 */
export function signAdhoc(thin: Uint8Array, identifier: string): Uint8Array {
  const macho = new MachO(thin);
  const command = macho.command(0x1d);
  const linkedit = macho.segment("__LINKEDIT");
  const text = macho.segment("__TEXT");
  if (!command || !linkedit || !text)
    throw new Error("signAdhoc: needs LC_CODE_SIGNATURE, __TEXT and __LINKEDIT");
  const old = macho.codeSignature()!;
  if (old.dataoff + old.datasize !== thin.length)
    throw new Error("signAdhoc: the signature is not at the end of the file");
  if (linkedit.fileoff + linkedit.filesize !== thin.length)
    throw new Error("signAdhoc: __LINKEDIT does not end the file");
  const codeLimit = old.dataoff;
  const pageSizeLog2 = 12;
  const nCodeSlots = Math.ceil(codeLimit / 2 ** pageSizeLog2);
  const nSpecialSlots = 2;
  const ident = new TextEncoder().encode(`${identifier}\0`);
  const cdHeader = 88; // through execSegFlags (version 0x20400)
  const hashOffset = cdHeader + ident.length + nSpecialSlots * 32;
  const cdLength = hashOffset + nCodeSlots * 32;
  const requirements = new Uint8Array(12);
  new DataView(requirements.buffer).setUint32(0, CSMAGIC_REQUIREMENTS, false);
  new DataView(requirements.buffer).setUint32(4, 12, false); // count 0
  const wrapper = new Uint8Array(8);
  new DataView(wrapper.buffer).setUint32(0, CSMAGIC_BLOBWRAPPER, false);
  new DataView(wrapper.buffer).setUint32(4, 8, false);
  const indexLength = 12 + 3 * 8;
  const superLength = indexLength + cdLength + requirements.length + wrapper.length;
  const datasize = Math.ceil(superLength / 16) * 16;

  const signed = new Uint8Array(codeLimit + datasize);
  signed.set(thin.subarray(0, codeLimit));
  const view = new DataView(signed.buffer);
  // Load commands first: the page hashes cover them.
  view.setUint32(command.offset + 12, datasize, true);
  const linkeditSize = codeLimit + datasize - linkedit.fileoff;
  view.setBigUint64(linkedit.commandOffset + 48, BigInt(linkeditSize), true);
  const vmPage = macho.cputype === 0x0100000c ? 16384 : 4096;
  view.setBigUint64(linkedit.commandOffset + 32, BigInt(Math.ceil(linkeditSize / vmPage) * vmPage), true);

  const sig = signed.subarray(codeLimit);
  const sigView = new DataView(sig.buffer, sig.byteOffset, sig.byteLength);
  sigView.setUint32(0, CSMAGIC_EMBEDDED_SIGNATURE, false);
  sigView.setUint32(4, superLength, false);
  sigView.setUint32(8, 3, false);
  const cdAt = indexLength;
  const reqAt = cdAt + cdLength;
  const wrapAt = reqAt + requirements.length;
  [
    [CSSLOT_CODEDIRECTORY, cdAt],
    [CSSLOT_REQUIREMENTS, reqAt],
    [CSSLOT_SIGNATURESLOT, wrapAt],
  ].forEach(([type, offset], index) => {
    sigView.setUint32(12 + index * 8, type!, false);
    sigView.setUint32(16 + index * 8, offset!, false);
  });
  sig.set(requirements, reqAt);
  sig.set(wrapper, wrapAt);
  const cd = sig.subarray(cdAt, cdAt + cdLength);
  const cdView = new DataView(cd.buffer, cd.byteOffset, cd.byteLength);
  cdView.setUint32(0, CSMAGIC_CODEDIRECTORY, false);
  cdView.setUint32(4, cdLength, false);
  cdView.setUint32(8, 0x20400, false);
  cdView.setUint32(12, CS_ADHOC, false);
  cdView.setUint32(16, hashOffset, false);
  cdView.setUint32(20, cdHeader, false);
  cdView.setUint32(24, nSpecialSlots, false);
  cdView.setUint32(28, nCodeSlots, false);
  cdView.setUint32(32, codeLimit, false);
  cd[36] = 32; // hashSize
  cd[37] = 2; // SHA-256
  cd[38] = 0; // platform
  cd[39] = pageSizeLog2;
  // 40 spare2, 44 scatterOffset, 48 teamOffset, 52 spare3, 56 codeLimit64: zero
  cdView.setBigUint64(64, BigInt(text.fileoff), false);
  cdView.setBigUint64(72, BigInt(text.filesize), false);
  cdView.setBigUint64(80, BigInt(macho.filetype === 2 ? CS_EXECSEG_MAIN_BINARY : 0), false);
  cd.set(ident, cdHeader);
  cd.set(hash(2, requirements), hashOffset - CSSLOT_REQUIREMENTS * 32);
  for (let page = 0; page < nCodeSlots; page++) {
    const start = page * 4096;
    cd.set(hash(2, signed.subarray(start, Math.min(start + 4096, codeLimit))), hashOffset + page * 32);
  }
  return signed;
}

export function formatReport(file: string, reports: SliceReport[]): string {
  const lines: string[] = [];
  for (const report of reports) {
    const status = report.errors.length === 0 ? "OK" : "FAILED";
    lines.push(`${file} [${report.arch}, ${report.size} bytes at ${report.offset}]: ${status}`);
    for (const cd of report.codeDirectories) {
      const slots = cd.specialSlots.filter((slot) => slot.status !== "absent");
      lines.push(
        `  ${cd.slotType === 0 ? "CodeDirectory" : `alt CD 0x${cd.slotType.toString(16)}`} v0x${cd.version.toString(16)} ` +
          `${cd.hashType}, ${cd.nCodeSlots} pages of ${cd.pageSize} up to ${cd.codeLimit}, ` +
          `flags 0x${cd.flags.toString(16)}${cd.flags & CS_ADHOC ? " (adhoc)" : ""}, id ${JSON.stringify(cd.identifier)}, ` +
          `special slots: ${slots.map((slot) => `${slot.name} ${slot.status}`).join(", ") || "none"}, cdhash ${cd.cdhash}`,
      );
    }
    lines.push(`  CMS signature: ${report.cms}`);
    for (const error of report.errors) lines.push(`  error: ${error}`);
  }
  return lines.join("\n");
}

if (import.meta.main) {
  const args = process.argv.slice(2);
  if (args[0] === "--resign") {
    for (const file of args.slice(1)) {
      const bytes = new Uint8Array(readFileSync(file));
      const changed = resign(bytes);
      writeFileSync(file, bytes);
      console.log(`${file}: ${changed} hashes rewritten`);
    }
  } else {
    if (args.length === 0) {
      console.error("usage: macho-signature.ts FILE... | --resign FILE...");
      process.exit(2);
    }
    let failed = false;
    for (const file of args) {
      try {
        const reports = verifySignatures(new Uint8Array(readFileSync(file)));
        console.log(formatReport(file, reports));
        if (reports.some((report) => report.errors.length > 0)) failed = true;
      } catch (error) {
        console.log(`${file}: FAILED: ${(error as Error).message}`);
        failed = true;
      }
    }
    process.exit(failed ? 1 : 0);
  }
}
