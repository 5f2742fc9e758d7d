// The Mach-O code-signature verifier and signer (scripts/release/macho-signature.ts), on the real
// darwin artifacts of a release build and on the official runtimes' Developer ID signatures, and
// proof that it fails: a flipped byte is reported as the page or special slot it hit.
import { beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { findLlvmTool } from "../../scripts/release/assemble-env-scrub.ts";
import { createFat, MachO, slices } from "../../scripts/release/macho.ts";
import { resign, signAdhoc, verifySignatures, verifySlice } from "../../scripts/release/macho-signature.ts";
import { hardenedRuntime, officialRuntime, TARGETS } from "../../scripts/release/runtimes.ts";
import { REQUIRED_IN_CI } from "../support/ci.ts";
import { requireTool } from "../support/tools.ts";
import { ROOT, releaseDist } from "./release-build.ts";

let dist: string;
const read = (name: string) => new Uint8Array(readFileSync(join(dist, name)));
const target = (name: string) => TARGETS.find((candidate) => candidate.name === name)!;

beforeAll(async () => {
  dist = await releaseDist();
}, 300_000);

describe("every darwin artifact carries a valid ad-hoc signature", () => {
  for (const name of ["softnet-darwin-arm64", "softnet-darwin-x64", "softnet-darwin-universal"]) {
    test(name, () => {
      const reports = verifySignatures(read(name));
      expect(reports.length).toBe(name.endsWith("universal") ? 2 : 1);
      for (const report of reports) {
        expect(report.errors).toEqual([]);
        const cd = report.codeDirectories[0]!;
        expect(cd.flags & 0x2).toBe(0x2); // ad hoc
        expect(cd.hashType).toBe("sha256");
        expect(cd.badPages).toEqual([]);
        expect(cd.codeLimit).toBe(
          new MachO(read(name).subarray(report.offset, report.offset + report.size)).codeSignature()!.dataoff,
        );
      }
      expect(reports.map((report) => report.arch).sort()).toEqual(
        name.endsWith("universal") ? ["arm64", "x86_64"] : [name.endsWith("arm64") ? "arm64" : "x86_64"],
      );
    });
  }
});

test("the official runtimes' Developer ID signatures verify, special slots included (the parser agrees with Apple's)", () => {
  for (const name of ["darwin-arm64", "darwin-x64"]) {
    const [report] = verifySignatures(new Uint8Array(readFileSync(officialRuntime(target(name)).path)));
    expect(report!.errors).toEqual([]);
    const statuses = Object.fromEntries(
      report!.codeDirectories[0]!.specialSlots.map((slot) => [slot.name, slot.status]),
    );
    expect(statuses).toMatchObject({ requirements: "ok", entitlements: "ok", "DER entitlements": "ok" });
    expect(report!.cms).toMatch(/bytes/);
  }
});

describe("the verifier fails where it must", () => {
  test("a flipped byte in a code page is reported as that page; resign() repairs it", () => {
    const bytes = read("softnet-darwin-arm64");
    const page = verifySlice(bytes).codeDirectories[0]!.pageSize;
    const at = 1234 * page + 77;
    bytes[at] ^= 0xff;
    const broken = verifySlice(bytes);
    expect(broken.errors.join("\n")).toContain("1 of");
    expect(broken.codeDirectories[0]!.badPages).toEqual([1234]);
    expect(resign(bytes)).toBe(1);
    expect(verifySlice(bytes).errors).toEqual([]);
  });

  test("a flipped byte in the requirements blob breaks special slot 2", () => {
    const bytes = read("softnet-darwin-x64");
    const { dataoff } = new MachO(bytes).codeSignature()!;
    const view = new DataView(bytes.buffer);
    const count = view.getUint32(dataoff + 8, false);
    let requirements = -1;
    for (let i = 0; i < count; i++) {
      if (view.getUint32(dataoff + 12 + i * 8, false) === 2)
        requirements = dataoff + view.getUint32(dataoff + 16 + i * 8, false);
    }
    expect(requirements).toBeGreaterThan(0);
    bytes[requirements + 11] ^= 1; // the requirement count
    expect(verifySlice(bytes).errors.join("\n")).toContain(
      "special slot 2 (requirements) hash does not match",
    );
  });

  test("in a universal file, the broken slice is named and the other stays valid", () => {
    const bytes = read("softnet-darwin-universal");
    const arm = slices(bytes).find((slice) => slice.cputype === 0x0100000c)!;
    bytes[arm.offset + 4096 * 3] ^= 1;
    const reports = verifySignatures(bytes);
    expect(reports.find((report) => report.arch === "arm64")!.errors.length).toBeGreaterThan(0);
    expect(reports.find((report) => report.arch === "x86_64")!.errors).toEqual([]);
  });

  test("Bun 1.4.5's own darwin-x64 output keeps a stale signature (why softnet signs that target)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "softnet-bun-x64-"));
    try {
      const outfile = join(dir, "bun-signed");
      const build = Bun.spawnSync(
        [
          process.execPath,
          "build",
          "--compile",
          "--target=bun-darwin-x64",
          `--compile-executable-path=${hardenedRuntime(target("darwin-x64")).path}`,
          "--outfile",
          outfile,
          "src/main.ts",
        ],
        { cwd: ROOT, stdout: "pipe", stderr: "pipe" },
      );
      expect(build.exitCode).toBe(0);
      const bunSigned = new Uint8Array(readFileSync(outfile));
      expect(verifySlice(bunSigned).errors.length).toBeGreaterThan(0); // if this passes one day, Bun fixed it
      const ours = signAdhoc(bunSigned, "softnet");
      expect(verifySlice(ours).errors).toEqual([]);
      const signature = new MachO(ours).codeSignature()!;
      expect(signature.dataoff % 16).toBe(0);
      expect(signature.dataoff + signature.datasize).toBe(ours.length);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});

test.skipIf(!findLlvmTool("llvm-lipo") && !REQUIRED_IN_CI)(
  "our fat file is byte for byte what llvm-lipo -create makes",
  () => {
    const dir = mkdtempSync(join(tmpdir(), "softnet-lipo-"));
    try {
      const reference = join(dir, "lipo");
      const lipo = Bun.spawnSync(
        [
          requireTool("llvm-lipo"),
          "-create",
          join(dist, "softnet-darwin-arm64"),
          join(dist, "softnet-darwin-x64"),
          "-output",
          reference,
        ],
        { stderr: "pipe" },
      );
      expect(lipo.exitCode).toBe(0);
      const ours = createFat([read("softnet-darwin-arm64"), read("softnet-darwin-x64")]);
      expect(Buffer.compare(Buffer.from(ours), readFileSync(reference))).toBe(0);
      expect(Buffer.compare(Buffer.from(ours), Buffer.from(read("softnet-darwin-universal")))).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
);
