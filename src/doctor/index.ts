/**
 * `softnet doctor`: runs the checks for this platform, prints the checklist (or JSON) on stdout,
 * and returns 0 when no check found a problem, 1 otherwise.
 *
 * Privileges, decided here once for every check (README "Troubleshooting"):
 * - started by root (`sudo softnet doctor`, or root itself): every check runs;
 * - started through the setuid bit by someone else: root is given back before the first check, so
 *   that the doctor cannot be used to act as root; the root-only checks then say "needs root";
 * - started by anyone else: the same, without anything to give back.
 * Under sudo, what the caller names (--path) is looked at with the caller's rights.
 *
 * SIGINT/SIGTERM: the cleanups of whatever a check holds (a TAP port, a vmnet interface, bootpd's
 * saved setting) run, the results so far are printed, and the doctor exits 130/143.
 */
import { release } from "node:os";
import { describeError, SoftnetError, UsageError } from "../errors.ts";
import type { DarwinSystem } from "../platform/darwin/system.ts";
import {
  asTargetUser,
  becomeUser,
  callerOf,
  type DropTarget,
  type IdentityCalls,
  resolveDropTarget,
} from "../platform/identity.ts";
import { COMMIT, VERSION } from "../version.ts";
import type { DoctorOptions } from "./cli.ts";
import { type DoctorContext, pathCheck, privilegeChecks, selfFile, versionCheck } from "./common.ts";
import type { DarwinDoctorPlatform } from "./darwin.ts";
import { type BridgeAccessList, builtInBridgeAccessList, listBridges } from "./linux.ts";
import { Checklist, type DoctorReport, exitCodeOf, formatChecklist, formatJson } from "./report.ts";

export async function runDoctor(options: DoctorOptions): Promise<number> {
  if (process.platform === "linux") return runLinuxDoctor(options);
  if (process.platform === "darwin") {
    const { MACOS_LIBRARIES } = await import("../platform/darwin/system.ts");
    return runDarwinDoctor(options, { libraries: MACOS_LIBRARIES, configureBootpd: true });
  }
  throw new SoftnetError(`softnet doctor does not run on ${process.platform}`, {
    hint: "it supports macOS and Linux",
  });
}

export async function runLinuxDoctor(
  options: DoctorOptions,
  accessListOverride?: BridgeAccessList,
): Promise<number> {
  const bridge = options.bridge;
  if (bridge === undefined) {
    const bridges = listBridges();
    throw new UsageError("doctor needs --bridge on Linux", {
      hint:
        "name the bridge your VMs join, e.g. --bridge br0; " +
        (bridges.length === 0 ? "this machine has no bridge yet" : `bridges here: ${bridges.join(", ")}`),
    });
  }
  const { linuxIdentityCalls } = await import("../platform/linux/privileges.ts");
  const { linuxChecks } = await import("./linux.ts");
  const accessList = accessListOverride ?? (await builtInBridgeAccessList());
  return doctorRun(
    options,
    linuxIdentityCalls,
    `Linux ${release()} ${process.arch}`,
    bridge,
    (list, context) =>
      linuxChecks(list, context, { bridge, dhcpTimeoutMs: options.dhcpTimeoutSeconds * 1000 }, accessList),
  );
}

/**
 * The macOS doctor. `platform` names the libraries, as for runOnDarwin: the constant macOS paths in
 * a release, the vmnet double in tests.
 */
export async function runDarwinDoctor(
  options: DoctorOptions,
  platform: DarwinDoctorPlatform,
): Promise<number> {
  const { openDarwinSystem } = await import("../platform/darwin/system.ts");
  const { darwinIdentityCalls } = await import("../platform/darwin/identity.ts");
  const { darwinChecks, describeDarwinSystem } = await import("./darwin.ts");
  let system: DarwinSystem;
  try {
    system = openDarwinSystem(platform.libraries);
  } catch (error) {
    throw new SoftnetError(`cannot load vmnet.framework and libSystem (${platform.libraries.vmnet})`, {
      cause: error,
      hint: "softnet needs macOS 11 or later",
    });
  }
  const systemName = await describeDarwinSystem(system);
  return doctorRun(options, darwinIdentityCalls(system), systemName, undefined, (list, context) =>
    darwinChecks(
      list,
      context,
      {
        bootpdLeaseTimeSeconds: options.bootpdLeaseTimeSeconds,
        dhcpTimeoutMs: options.dhcpTimeoutSeconds * 1000,
        vmMac: options.vmMac,
      },
      platform,
      system,
      systemName,
    ),
  );
}

const SIGNAL_EXIT: Record<string, number> = { SIGINT: 130, SIGTERM: 143 };

async function doctorRun(
  options: DoctorOptions,
  calls: IdentityCalls,
  systemName: string,
  bridge: string | undefined,
  platformChecks: (list: Checklist, context: DoctorContext) => Promise<void>,
): Promise<number> {
  const started = { realUid: calls.getuid(), effectiveUid: calls.geteuid(), realGid: calls.getgid() };
  const env = { ...process.env };
  // Who started the doctor: the same answer softnet itself would get (caller.ts).
  const caller = callerOf(calls, env);
  const none = { user: undefined, group: undefined };
  // A setuid start by someone else: root goes back before anything else runs.
  if (caller.kind === "setuid-user" && started.effectiveUid === 0) {
    becomeUser(calls, resolveDropTarget(calls, caller, none));
  }
  const asRoot = started.realUid === 0 && started.effectiveUid === 0;
  const sudoUser: DropTarget | undefined =
    asRoot && caller.kind === "sudo-user" ? resolveDropTarget(calls, caller, none) : undefined;
  const list = new Checklist();
  const cleanups = new Set<() => void>();
  let interrupted: string | undefined;
  const self = selfFile();
  const context: DoctorContext = {
    started,
    caller,
    asRoot,
    identity: calls,
    env,
    pathOption: options.path,
    self,
    interrupted: () => interrupted !== undefined,
    asCaller: (work) => (sudoUser === undefined ? work() : asTargetUser(calls, sudoUser, work)),
    cleanups,
  };
  const report = (): DoctorReport => ({
    softnet: { version: VERSION, commit: COMMIT, executable: self.path },
    system: systemName,
    bridge,
    checks: list.results,
    interrupted,
  });
  const print = () => process.stdout.write(options.json ? formatJson(report()) : formatChecklist(report()));
  const runCleanups = () => {
    for (const cleanup of [...cleanups].reverse()) {
      cleanups.delete(cleanup);
      try {
        cleanup();
      } catch (error) {
        process.stderr.write(`softnet: doctor cleanup failed: ${describeError(error)}\n`);
      }
    }
  };
  const onSignal = (signal: NodeJS.Signals) => {
    if (interrupted !== undefined) return;
    interrupted = `${signal} before every check had run; what the doctor held is released`;
    runCleanups();
    print();
    process.exit(SIGNAL_EXIT[signal] ?? 1);
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  try {
    versionCheck(list, self);
    await privilegeChecks(list, context);
    pathCheck(list, context);
    await platformChecks(list, context);
  } catch (error) {
    // A bug, not a finding: still print what was found, with the error where the checks stopped.
    list.problem(
      "doctor",
      "the doctor ran every check",
      `it stopped: ${describeError(error)}`,
      "report this as a bug, with this output",
    );
  } finally {
    runCleanups();
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
  print();
  return exitCodeOf(report());
}
