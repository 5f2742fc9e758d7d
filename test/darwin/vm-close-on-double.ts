// softnet's macOS runtime (runOnDarwin, what Tart starts) with a VM whose end of the socket closes
// while softnet runs, as when Tart dies without sending SIGINT. Test code only, for
// test/darwin/vm-close.test.ts.
//
// The VM is the other end of a socketpair made through the vmnet double's xnu sockets
// (support.ts xnuLibraries, test/vmnet-double/xnu-socket.c), in this same process, so its close
// behaves as on macOS: ECONNRESET once after the queued frames, EDESTADDRREQ on send, and the
// socket never polls readable again. Linux would behave differently, which is why the double is
// the C library here.
//
// Usage: bun test/darwin/vm-close-on-double.ts --vm frames-then-close|close [--variant old-macos|before-macos-11]
//          --bridge BR --vm-mac-address MAC [other softnet options; --vm-fd is added here]
// Once softnet logs that it is forwarding, the VM does what --vm says, all in one go: send three
// frames (from a MAC that is not its own, so the policy drops them) and close at once; or, after
// half a second in which softnet has nothing to do (its reactor waits in poll), just close.
// softnet's log goes to stderr; the exit code is runOnDarwin's (1 with the error line if it throws).
import { parseCommandLine } from "../../src/cli.ts";
import { describeError, exitCodeFor } from "../../src/errors.ts";
import { Logger } from "../../src/log.ts";
import { openDarwinSystem } from "../../src/platform/darwin/system.ts";
import { runOnDarwin } from "../../src/runtime.ts";
import { buildDouble, type DoubleVariant, doubleControl, xnuLibraries } from "./support.ts";

const args = process.argv.slice(2);
function take(option: string): string | undefined {
  const at = args.indexOf(option);
  return at === -1 ? undefined : args.splice(at, 2)[1];
}
const vmBehaviour = take("--vm");
const variant = (take("--variant") ?? "current") as DoubleVariant;
if (vmBehaviour !== "frames-then-close" && vmBehaviour !== "close") {
  process.stderr.write("usage: --vm frames-then-close|close\n");
  process.exit(2);
}

try {
  const path = buildDouble(variant);
  const libraries = xnuLibraries(path);
  const system = openDarwinSystem(libraries);
  const sv = new Int32Array(2);
  if (system.libc.socketpair(system.kernel.AF_UNIX, system.kernel.SOCK_DGRAM, 0, sv) !== 0) {
    throw new Error("socketpair failed");
  }
  const [ours, vm] = [sv[0]!, sv[1]!];
  const parsed = parseCommandLine([...args, "--vm-fd", String(ours)]);
  if (parsed.kind !== "run") throw new Error("expected options to run with");
  const double = doubleControl(path);
  double.configure(parsed.options.bridge ?? "br0");

  const vmActs = () => {
    if (vmBehaviour === "frames-then-close") {
      const frame = new Uint8Array(60);
      frame.set([0x02, 0, 0, 0, 0, 0x99, 0x08, 0x00], 6); // IPv4 from a MAC not the VM's: spoofed
      for (let i = 0; i < 3; i++) system.libc.send(vm, frame, frame.length, system.kernel.MSG_DONTWAIT);
    }
    system.libc.close(vm);
    process.stderr.write("vm: closed its end\n");
  };
  let acted = false;
  const logger = new Logger(parsed.options.logLevel, (line) => {
    process.stderr.write(line);
    if (!acted && line.includes("forwarding for VM")) {
      acted = true;
      setTimeout(vmActs, vmBehaviour === "close" ? 500 : 0);
    }
  });
  const code = await runOnDarwin(parsed.options, logger, { libraries, configureBootpd: false });
  const violations = double.violations();
  process.stderr.write(
    `vmnet double: ${violations.count} violations${violations.count ? `: ${violations.last}` : ""}\n`,
  );
  process.exitCode = violations.count === 0 ? code : 3;
} catch (error) {
  process.stderr.write(`softnet: ${describeError(error)}\n`);
  process.exitCode = exitCodeFor(error);
}
