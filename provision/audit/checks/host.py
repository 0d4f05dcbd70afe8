"""The host around the GPUs: nouveau, Secure Boot, the clock, a pending reboot."""

from __future__ import annotations

from provision.audit.checks.base import CheckResult, Context, Status, check


@check("nouveau", reads=("host.nouveau_loaded",))
def nouveau(ctx: Context) -> list[CheckResult]:
    if not ctx.host.get("nouveau_loaded"):
        return [CheckResult("nouveau", Status.OK, "nouveau not loaded")]
    fix = "blacklist nouveau in /etc/modprobe.d, update-initramfs -u, reboot"
    return [CheckResult("nouveau", Status.FAIL, "nouveau module is loaded", remediation=fix)]


@check("secure_boot", reads=("host.secure_boot", "host.secure_boot_reason", "nvidia.nvml"))
def secure_boot(ctx: Context) -> list[CheckResult]:
    sb = ctx.host.get("secure_boot")
    if sb is None:
        reason = ctx.host.get("secure_boot_reason") or "unknown"
        return [CheckResult("secure_boot", Status.SKIP, reason)]
    if sb and ctx.gpu_host and ctx.nvidia.get("nvml") == "no driver":
        msg = "Secure Boot enabled and the NVIDIA module is not loaded (unsigned module?)"
        fix = (
            "sign the DKMS module and enroll the MOK (mokutil --import), "
            "confirm at the console on the next boot, or disable Secure Boot"
        )
        return [CheckResult("secure_boot", Status.FAIL, msg, remediation=fix)]
    return [CheckResult("secure_boot", Status.OK, "enabled" if sb else "disabled", evidence=sb)]


@check("clock.ntp", reads=("host.ntp_synced", "host.ntp_reason"))
def clock(ctx: Context) -> list[CheckResult]:
    ntp = ctx.host.get("ntp_synced")
    if ntp is None:
        return [CheckResult("clock.ntp", Status.SKIP, ctx.host.get("ntp_reason") or "unknown")]
    if ntp:
        return [CheckResult("clock.ntp", Status.OK, "NTP synchronized")]
    fix = "enable systemd-timesyncd or chrony"
    return [CheckResult("clock.ntp", Status.WARN, "clock not NTP-synchronized", remediation=fix)]


@check("reboot.required", reads=("host.reboot_required",))
def reboot(ctx: Context) -> list[CheckResult]:
    if ctx.host.get("reboot_required"):
        msg = "/var/run/reboot-required exists"
        return [CheckResult("reboot.required", Status.WARN, msg, True, "reboot")]
    return [CheckResult("reboot.required", Status.OK, "no reboot pending")]
