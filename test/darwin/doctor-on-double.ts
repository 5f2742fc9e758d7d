#!/usr/bin/env bun
// `softnet doctor`'s macOS path (runDarwinDoctor), run on Linux against the vmnet double: the same
// DarwinLibraries injection as softnet-on-double.ts gives runOnDarwin. Test code only.
//
// Usage: bun test/darwin/doctor-on-double.ts [--double-bridge NAME] [--double-log PATH]
//          [--double-variant current|old-macos] [--inject OPERATION:STATUS]... [--fake-bootpd]
//          [--host-scenario JSON | --no-host-fixtures] <softnet doctor arguments>
// The host checks (firewall, leases, routes, bootpd's job) read fixtures (host-fixtures.ts): a
// healthy Mac unless --host-scenario overrides some answers; --no-host-fixtures gives them none.
// Prints the doctor's output on stdout, then on stderr "vmnet double: N violations" and, with
// --fake-bootpd, "fake preferences after: JSON" and "fake objects alive: N". Exit code: the
// doctor's, or 3 when the double saw a violation.
import { parseDoctorCommandLine } from "../../src/doctor/cli.ts";
import { runDarwinDoctor } from "../../src/doctor/index.ts";
import { describeError, exitCodeFor } from "../../src/errors.ts";
import { fakePreferences } from "./fake-bootpd.ts";
import { fixtureReader, type HostScenario } from "./host-fixtures.ts";
import { buildDouble, type DoubleVariant, doubleControl, doubleLibraries } from "./support.ts";

const args = process.argv.slice(2);
function take(flag: string): string[] {
  const values: string[] = [];
  for (let at = args.indexOf(flag); at !== -1; at = args.indexOf(flag)) values.push(args.splice(at, 2)[1]!);
  return values;
}
const bridge = take("--double-bridge")[0] ?? "br0";
const log = take("--double-log")[0];
const variant = (take("--double-variant")[0] ?? "current") as DoubleVariant;
const injections = take("--inject");
const hostScenario = take("--host-scenario")[0];
const noFixturesAt = args.indexOf("--no-host-fixtures");
if (noFixturesAt !== -1) args.splice(noFixturesAt, 1);
const fakeAt = args.indexOf("--fake-bootpd");
if (fakeAt !== -1) args.splice(fakeAt, 1);
// What a Mac's file might hold besides bootpd's key: the doctor must leave it alone.
const fake = fakeAt === -1 ? undefined : fakePreferences({ unrelated: "kept" });

try {
  const parsed = parseDoctorCommandLine(args);
  if (parsed.kind !== "doctor") throw new Error("expected doctor options");
  const path = buildDouble(variant);
  const double = doubleControl(path);
  double.configure(bridge);
  if (log !== undefined) double.setLog(log);
  for (const injection of injections) {
    const [operation, status] = injection.split(":").map(Number);
    double.inject(operation!, status!);
  }
  const code = await runDarwinDoctor(parsed.options, {
    libraries: doubleLibraries(path),
    configureBootpd: fake !== undefined,
    bootpdSymbols: fake === undefined ? undefined : { write: fake.symbols, read: fake.symbols },
    hostReader:
      noFixturesAt !== -1
        ? undefined
        : fixtureReader(hostScenario === undefined ? {} : (JSON.parse(hostScenario) as HostScenario)),
  });
  const violations = double.violations();
  process.stderr.write(
    `vmnet double: ${violations.count} violations${violations.count ? `: ${violations.last}` : ""}\n`,
  );
  if (fake !== undefined) {
    process.stderr.write(`fake preferences after: ${JSON.stringify(fake.file)}\n`);
    process.stderr.write(`fake objects alive: ${fake.live().size}\n`);
  }
  process.exitCode = violations.count === 0 ? code : 3;
} catch (error) {
  process.stderr.write(`softnet: ${describeError(error)}\n`);
  process.exitCode = exitCodeFor(error);
}
