// The macOS strategy for run-time C (runtime-c.ts: a root-owned unlinked file given as /dev/fd/N),
// exactly as runOnDarwin uses it for the vmnet callbacks: prepared as root, compiled by
// asTargetUser as the user softnet drops to. Run as root on Linux with the vmnet double's C
// library. Test code only. Usage: bun test/darwin/compile-after-drop-on-double.ts UID GID
// Prints one JSON line: { mode, offset, answer } or { error }.
import { FFIType } from "bun:ffi";
import { readFileSync, statSync, writeSync } from "node:fs";
import { describeError } from "../../src/errors.ts";
import { darwinIdentityCalls } from "../../src/platform/darwin/identity.ts";
import { openDarwinSystem, sourceFileCalls } from "../../src/platform/darwin/system.ts";
import { asTargetUser } from "../../src/platform/identity.ts";
import { compileSealedSource, sealText } from "../../src/platform/runtime-c.ts";
import { buildDouble, doubleLibraries } from "./support.ts";

const [uid, gid] = process.argv.slice(2).map(Number) as [number, number];
const system = openDarwinSystem(doubleLibraries(buildDouble()));
const source = sealText(
  sourceFileCalls(system),
  "a test file",
  "int answer(void) { return 42; }\n",
  "unlinked-temp-file",
);
// What TinyCC will get: the file's mode, and the descriptor's offset (fdinfo "pos:"), which a
// duplicating /dev/fd (macOS) shares with TinyCC's descriptor.
const mode = statSync(source.path).mode & 0o777;
const offset = Number(/^pos:\s+(\d+)$/m.exec(readFileSync(`/proc/self/fdinfo/${source.fd}`, "utf8"))?.[1]);
try {
  const target = { uid, gid, userName: undefined, groups: [], rootAllowed: false, chosenBy: "the test" };
  // Markers for an strace of this script (compile-after-drop.test.ts): the compile lies between.
  writeSync(2, "COMPILE-START\n");
  const compiled = asTargetUser(darwinIdentityCalls(system), target, () =>
    compileSealedSource(source, { answer: { args: [], returns: FFIType.i32 } }),
  );
  writeSync(2, "COMPILE-END\n");
  console.log(JSON.stringify({ mode, offset, answer: compiled.answer() }));
} catch (error) {
  console.log(JSON.stringify({ mode, offset, error: describeError(error) }));
}
