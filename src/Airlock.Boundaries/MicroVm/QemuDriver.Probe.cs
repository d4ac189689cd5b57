using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using Airlock.Boundaries.Cgroups;
using Airlock.Core.Drivers;
using Airlock.Core.Sandboxes;
using CliWrap;
using CliWrap.Buffered;

namespace Airlock.Boundaries.MicroVm;

/// <summary>What the microvm boundary needs from the host: tools, a guest kernel, and a probe boot that proves accelerator and machine.</summary>
public sealed partial class QemuDriver
{
    public Task<DriverAvailability> ProbeAsync(CancellationToken cancellationToken) => _probe.GetAsync(ProbeUncachedAsync, cancellationToken);

    private async Task<DriverAvailability> ProbeUncachedAsync(CancellationToken cancellationToken)
    {
        var missing = new List<string>();
        if (NativeMethods.geteuid() != 0)
        {
            missing.Add("root (airlockd creates tap devices, cgroups and enters network namespaces)");
        }

        var version = await HostTools.TryRunAsync(options.Qemu, ["--version"], cancellationToken);
        _version = version is { ExitCode: 0 } ? version.StandardOutput.Split('\n')[0].Replace("QEMU emulator version ", "", StringComparison.Ordinal).Trim() : "";
        if (_version.Length == 0)
        {
            missing.Add($"{options.Qemu} (apt install qemu-system-x86)");
        }

        if (await HostTools.TryRunAsync(options.QemuImg, ["--version"], cancellationToken) is not { ExitCode: 0 })
        {
            missing.Add($"{options.QemuImg} (apt install qemu-utils)");
        }

        _kernel = options.Kernel ?? GuestBootImage.FindKernel() ?? "";
        if (!File.Exists(_kernel))
        {
            missing.Add("a guest kernel (apt install linux-image-cloud-amd64)");
        }

        foreach (var (file, package) in new[] { (options.Busybox, "busybox-static"), (options.Tini, "tini"), ("/sbin/mkfs.ext4", "e2fsprogs"), ("/dev/net/tun", "the tun module") })
        {
            if (!File.Exists(file))
            {
                missing.Add($"{file} ({package})");
            }
        }

        if (_cgroups.Probe() is { } cgroupProblem)
        {
            missing.Add(cgroupProblem);
        }

        if (missing.Count > 0)
        {
            return new DriverAvailability(Boundary, Name, false, "the microvm boundary needs: " + string.Join("; ", missing)) { Missing = missing };
        }

        _tscKhz = HostTscKhz();
        // The probe boots are the same for every airlockd in this process (tests host several): run them once.
        var probeKey = string.Join('|', options.Qemu, _kernel, options.Busybox, options.Accelerator, options.VmDir);
        var result = await BootProbes.GetOrAdd(probeKey, _ => new Lazy<Task<BootProbe>>(() => RunBootProbesAsync(CancellationToken.None))).Value;
        Accelerator = result.Accelerator;
        AcceleratorReason = result.Reason;
        if (result.Machine is { } machine)
        {
            Machine = machine;
            return new DriverAvailability(Boundary, Name, true,
                $"qemu {_version}, machine {Machine}, accelerator {Accelerator} ({AcceleratorReason}), kernel {GuestRelease}, cgroup {_cgroups.Mode}");
        }

        return new DriverAvailability(Boundary, Name, false, "no machine type boots the guest kernel: " + string.Join("; ", result.Problems)) { Missing = result.Problems };
    }

    private sealed record BootProbe(string Accelerator, string Reason, string? Machine, IReadOnlyList<string> Problems);

    private static readonly ConcurrentDictionary<string, Lazy<Task<BootProbe>>> BootProbes = new(StringComparer.Ordinal);

    /// <summary>KVM if a bounded probe boot under it works, else TCG; then the first machine type that boots.</summary>
    private async Task<BootProbe> RunBootProbesAsync(CancellationToken cancellationToken)
    {
        var probeImage = await BuildProbeImageAsync(cancellationToken);
        var kvmProblem = await ProbeKvmAsync(probeImage, cancellationToken);
        var accel = kvmProblem is null ? "kvm" : "tcg";
        var reason = kvmProblem is null ? "KVM probe boot finished" : kvmProblem;
        var problems = new List<string>();
        foreach (var machine in new[] { "microvm", "q35" })
        {
            var problem = await ProbeBootAsync(probeImage, accel, machine, options.ProbeTimeout, cancellationToken);
            if (problem is null)
            {
                return new BootProbe(accel, reason, machine, problems);
            }

            problems.Add($"{machine} probe boot under {accel}: {problem}");
        }

        return new BootProbe(accel, reason, null, problems);
    }

    private string GuestRelease => Path.GetFileName(_kernel).Replace("vmlinuz-", "", StringComparison.Ordinal);

    /// <summary>KVM is used only when a probe boot under it finishes; on nested hosts /dev/kvm may open while guests hang.</summary>
    private async Task<string?> ProbeKvmAsync(string probeImage, CancellationToken cancellationToken)
    {
        if (options.Accelerator == "tcg")
        {
            return "TCG forced by configuration";
        }

        if (!File.Exists("/dev/kvm"))
        {
            return "/dev/kvm does not exist";
        }

        try
        {
            await using var kvm = File.Open("/dev/kvm", FileMode.Open, FileAccess.ReadWrite);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return $"/dev/kvm cannot be opened: {e.Message}";
        }

        var problem = await ProbeBootAsync(probeImage, "kvm", "microvm", options.KvmProbeTimeout, cancellationToken);
        return problem is null ? null : $"/dev/kvm opens but a KVM probe boot failed ({problem}); using TCG";
    }

    /// <summary>Boots the probe initramfs (it prints a marker and powers off); null when that worked in time.</summary>
    private async Task<string?> ProbeBootAsync(string probeImage, string accel, string machine, TimeSpan limit, CancellationToken cancellationToken)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(limit + TimeSpan.FromSeconds(2));
        var output = new StringBuilder();
        try
        {
            // coreutils timeout SIGKILLs QEMU at the limit even if airlockd exits first (a guest hung under a broken
            // KVM ignores SIGINT, and an orphaned probe would spin forever); the token is a second net.
            List<string> args = ["-s", "KILL", ((int)Math.Ceiling(limit.TotalSeconds)).ToString(CultureInfo.InvariantCulture), options.Qemu];
            args.AddRange(MachineArgs(accel, machine, 1, 128));
            args.AddRange(["-serial", "stdio", "-kernel", _kernel, "-initrd", probeImage,
                "-append", GuestBootImage.CommandLine("", "probe", accel == "tcg" ? _tscKhz : 0, probe: true)]);
            var result = await Cli.Wrap("timeout").WithArguments(args)
                .WithStandardOutputPipe(PipeTarget.ToStringBuilder(output))
                .WithStandardErrorPipe(PipeTarget.ToStringBuilder(output))
                .WithValidation(CommandResultValidation.None)
                .ExecuteAsync(timeout.Token);
            return output.ToString().Contains("AIRLOCK-PROBE-OK", StringComparison.Ordinal) ? null
                : result.ExitCode == 137 ? $"the guest did not reach init within {limit.TotalSeconds:0} s"
                : $"exit {result.ExitCode} without reaching init: {Tail(output.ToString())}";
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            return $"the guest did not reach init within {limit.TotalSeconds:0} s";
        }
    }

    private async Task<string> BuildProbeImageAsync(CancellationToken cancellationToken)
    {
        var dir = Path.Combine(options.VmDir, "probe");
        Directory.CreateDirectory(dir);
        var path = Path.Combine(dir, "probe.cpio");
        var temp = $"{path}.{Environment.ProcessId}.tmp"; // other airlockd processes may be booting the current one
        await using (var stream = File.Create(temp))
        {
            using var cpio = new CpioWriter(stream);
            foreach (var d in new[] { "bin", "dev", "proc", "sys" })
            {
                cpio.AddDirectory(d);
            }

            cpio.AddFile("init", Encoding.UTF8.GetBytes("#!/bin/busybox sh\n/bin/busybox mount -t devtmpfs dev /dev\necho AIRLOCK-PROBE-OK > /dev/ttyS0\n/bin/busybox poweroff -f\n"), 0x1ED);
            cpio.AddFile("bin/busybox", await File.ReadAllBytesAsync(options.Busybox, cancellationToken), 0x1ED);
        }

        File.Move(temp, path, overwrite: true);
        return path;
    }
}
