// softnet's macOS runtime (runOnDarwin: vmnet host link, poll reactor, portable privilege drop),
// run on Linux against the vmnet double. Test code only: it is how CI exercises the darwin path
// end to end. Usage: bun test/darwin/softnet-on-double.ts --double-log PATH <softnet arguments>
// (--bridge names the bridge the double backs its interface with).
//
// The double is the C library too (support.ts xnuLibraries): --expose's port check passes xnu's
// struct sockaddr_in to bind(), which only the double's bind (test/vmnet-double/xnu-socket.c)
// reads as libSystem would; glibc's would refuse it. The socketpairs softnet makes itself (its
// wake-up sockets) so get xnu's datagram behaviour too; the VM socket is the test's, made outside
// the double, and keeps Linux's.
import { parseCommandLine } from "../../src/cli.ts";
import { describeError, exitCodeFor } from "../../src/errors.ts";
import { Logger } from "../../src/log.ts";
import { runOnDarwin } from "../../src/runtime.ts";
import { buildDouble, doubleControl, xnuLibraries } from "./support.ts";

const args = process.argv.slice(2);
const logAt = args.indexOf("--double-log");
const doubleLog = logAt === -1 ? undefined : args.splice(logAt, 2)[1];
try {
  const parsed = parseCommandLine(args);
  if (parsed.kind !== "run") throw new Error("expected options to run with");
  const path = buildDouble();
  const double = doubleControl(path);
  double.configure(parsed.options.bridge ?? "br0");
  if (doubleLog !== undefined) double.setLog(doubleLog);
  const code = await runOnDarwin(parsed.options, new Logger(parsed.options.logLevel), {
    libraries: xnuLibraries(path),
    configureBootpd: false,
  });
  const violations = double.violations();
  process.stderr.write(
    `vmnet double: ${violations.count} violations${violations.count ? `: ${violations.last}` : ""}\n`,
  );
  process.exitCode = violations.count === 0 ? code : 3;
} catch (error) {
  process.stderr.write(`softnet: ${describeError(error)}\n`);
  process.exitCode = exitCodeFor(error);
}
