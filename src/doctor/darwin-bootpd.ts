/**
 * darwin.bootpd: softnet writes --bootpd-lease-time for bootpd before vmnet starts (bootpd.ts). The
 * doctor writes it the same way, reads it back, compares it with the lease time of the OFFER
 * bootpd then makes through vmnet, and puts the previous setting back (doctor-probes.ts), so that
 * it leaves the preferences as it found them. Restoring happens once, after the DHCP check (bootpd
 * reads its settings when InternetSharing starts it), or from the cleanups on SIGINT/SIGTERM.
 */
import type { BootpdSymbols } from "../platform/darwin/bootpd.ts";
import type { BootpdReadSymbols, SavedBootpdSettings } from "../platform/darwin/doctor-probes.ts";
import type { DarwinSystem } from "../platform/darwin/system.ts";
import type { DoctorContext } from "./common.ts";
import type { Offer } from "./probe.ts";
import type { Checklist } from "./report.ts";

/** What of the doctor's DarwinDoctorPlatform (darwin.ts) this step reads. */
export interface BootpdPlatform {
  /** Whether to set bootpd's lease time, as DarwinPlatform says: false on the vmnet double (no bootpd). */
  configureBootpd: boolean;
  /** For tests only: stand-ins for CoreFoundation/SystemConfiguration, so this runs on Linux. */
  readonly bootpdSymbols?: { readonly write: BootpdSymbols; readonly read: BootpdReadSymbols };
}

export interface BootpdStep {
  /** Puts the previous setting back (once; later calls do nothing). */
  restore(): void;
  /** Writes the bootpd line, comparing with the lease time of the OFFER when there is one. */
  finish(offer: Offer | undefined): void;
}

/**
 * Writes `seconds` (softnet's --bootpd-lease-time) and reads it back now; restore() and finish()
 * come after the DHCP check.
 */
export async function writeBootpdLeaseTime(
  list: Checklist,
  context: DoctorContext,
  seconds: number,
  platform: BootpdPlatform,
  system: DarwinSystem,
  systemName: string,
): Promise<BootpdStep> {
  const id = "darwin.bootpd";
  const title = "bootpd's lease time reads back as written";
  if (!platform.configureBootpd) {
    list.replace({
      id,
      title,
      status: "n/a",
      detail:
        `not on ${systemName}: there is no bootpd here (dnsmasq answers DHCP on the double's bridge); ` +
        `on a Mac this writes ${seconds} s, reads it back and puts the old value back`,
      values: { system: systemName },
    });
    return { restore() {}, finish() {} };
  }
  const { openBootpdSymbols, setBootpdLeaseTime } = await import("../platform/darwin/bootpd.ts");
  const probes = await import("../platform/darwin/doctor-probes.ts");
  const symbols = platform.bootpdSymbols ?? {
    write: openBootpdSymbols(system),
    read: probes.openBootpdReadSymbols(),
  };
  const read = symbols.read;
  const saved = probes.saveBootpdSettings(read);
  const before = probes.readBootpdLeaseTime(read);
  const warning =
    typeof saved === "string"
      ? `cannot save the current setting: ${saved}`
      : setBootpdLeaseTime(seconds, symbols.write);
  const after = warning === undefined ? probes.readBootpdLeaseTime(read) : undefined;
  let restored: string | undefined;
  let done = typeof saved === "string";
  const restore = () => {
    if (done) return;
    done = true;
    context.cleanups.delete(restore);
    restored = probes.restoreBootpdSettings(read, saved as SavedBootpdSettings);
  };
  context.cleanups.add(restore);
  const show = (setting: ReturnType<typeof probes.readBootpdLeaseTime> | undefined) =>
    setting === undefined
      ? "not read"
      : setting.kind === "seconds"
        ? `${setting.seconds} s`
        : setting.kind === "absent"
          ? "not set (bootpd's default)"
          : `unreadable: ${setting.why}`;
  return {
    restore,
    finish(offer) {
      const offered = offer?.dhcp.leaseTimeSeconds;
      const values = {
        system: systemName,
        written: seconds,
        before: show(before),
        readBack: show(after),
        offeredLeaseSeconds: offered ?? null,
        restored: restored ?? "ok",
      };
      const restoredText =
        restored === undefined
          ? "the previous value is back"
          : `putting the previous value back failed: ${restored}`;
      if (warning !== undefined || after?.kind !== "seconds" || after.seconds !== seconds) {
        list.replace({
          id,
          title,
          status: "problem",
          detail: `${warning ?? `wrote ${seconds} s, read back ${show(after)}`} (on ${systemName}); ${restoredText}`,
          advice: "softnet's --bootpd-lease-time has no effect here: VMs keep bootpd's own lease time",
          values,
        });
        return;
      }
      const offerNote =
        offered === undefined
          ? "no OFFER to compare with"
          : offered === seconds
            ? `bootpd offered exactly ${offered} s: it uses the setting`
            : `bootpd offered ${offered} s, not ${seconds}: it was probably already running with older settings`;
      list.replace({
        id,
        title,
        status: restored === undefined ? "ok" : "problem",
        detail: `wrote ${seconds} s (was ${show(before)}), read back ${show(after)}; ${offerNote}; ${restoredText} (on ${systemName})`,
        advice:
          restored === undefined
            ? undefined
            : `check /Library/Preferences/SystemConfiguration/com.apple.InternetSharing.default.plist`,
        values,
      });
    },
  };
}
