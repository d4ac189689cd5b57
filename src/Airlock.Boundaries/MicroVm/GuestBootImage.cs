using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using Airlock.Boundaries.Seccomp;
using CliWrap;
using CliWrap.Buffered;

namespace Airlock.Boundaries.MicroVm;

/// <summary>The kernel and initramfs every microVM boots, and the hash that names them.</summary>
public sealed record GuestBoot(string Kernel, string KernelRelease, string Initramfs, string Hash);

/// <summary>
/// Builds Airlock's initramfs once per set of inputs: busybox-static, the virtio/block/net modules of the installed
/// Debian cloud kernel, tini as pid 1, the guest agent, the process boundary's seccomp filter (compiled here, on the
/// host, so the guest needs no libseccomp) for the agent to start the sandbox user's commands under, and an init that
/// mounts the sandbox's disk, sets up its network and starts the agent hardening the guest. Cached under <c>&lt;cache&gt;/boot-&lt;hash&gt;/</c>; any changed input gives a new hash.
/// </summary>
public static class GuestBootImage
{
    /// <summary>Bumped whenever the init script or the layout changes.</summary>
    private const string Version = "airlock-initramfs-3";

    /// <summary>Modules the guest needs, in load order; modprobe resolves their dependencies.</summary>
    public static readonly IReadOnlyList<string> Modules = ["virtio_mmio", "virtio_pci", "virtio_blk", "virtio_net", "virtio-rng", "overlay"];

    /// <summary>The newest Debian cloud kernel in /boot, or null.</summary>
    public static string? FindKernel(string bootDir = "/boot") =>
        Directory.Exists(bootDir)
            ? Directory.EnumerateFiles(bootDir, "vmlinuz-*-cloud-amd64").OrderDescending(StringComparer.Ordinal).FirstOrDefault()
            : null;

    public static async Task<GuestBoot> EnsureAsync(string cacheDir, string kernel, string busybox, string tini, string agent, CancellationToken cancellationToken)
    {
        var release = Path.GetFileName(kernel)["vmlinuz-".Length..];
        var modules = await ResolveModulesAsync(release, cancellationToken);
        var seccomp = SeccompProfile.Compile(Path.Combine(cacheDir, "tmp"));
        var inputs = new List<string> { Version, release, Init, seccomp.Description };
        foreach (var file in new[] { kernel, busybox, tini, agent }.Concat(modules))
        {
            inputs.Add(file + ":" + await HashFileAsync(file, cancellationToken));
        }

        var hash = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(string.Join('\n', inputs))))[..16];
        var dir = Path.Combine(cacheDir, "boot-" + hash);
        var initramfs = Path.Combine(dir, "initramfs.cpio");
        await using (await FileLock.AcquireAsync(Path.Combine(cacheDir, ".boot.lock"), cancellationToken))
        {
            if (!File.Exists(initramfs))
            {
                Directory.CreateDirectory(dir);
                var temp = initramfs + ".tmp";
                await using (var stream = File.Create(temp))
                {
                    using var cpio = new CpioWriter(stream);
                    foreach (var d in new[] { "bin", "dev", "proc", "sys", "newroot", "lib", "lib/modules", "airlock" })
                    {
                        cpio.AddDirectory(d);
                    }

                    cpio.AddFile("init", Encoding.UTF8.GetBytes(Init), 0x1ED);
                    cpio.AddFile("bin/busybox", await File.ReadAllBytesAsync(busybox, cancellationToken), 0x1ED);
                    cpio.AddFile("airlock/tini", await File.ReadAllBytesAsync(tini, cancellationToken), 0x1ED);
                    cpio.AddFile("airlock/airlock-guest", await File.ReadAllBytesAsync(agent, cancellationToken), 0x1ED);
                    cpio.AddFile("airlock/seccomp.bpf", seccomp.Bpf);
                    var order = new StringBuilder();
                    foreach (var module in modules)
                    {
                        var name = Path.GetFileName(module);
                        cpio.AddFile("lib/modules/" + name, await File.ReadAllBytesAsync(module, cancellationToken));
                        order.Append(name).Append('\n');
                    }

                    cpio.AddFile("lib/modules/order", Encoding.UTF8.GetBytes(order.ToString()));
                }

                UnixFiles.SetMode(temp, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
                File.Move(temp, initramfs, overwrite: true);
            }
        }

        return new GuestBoot(kernel, release, initramfs, hash);
    }

    /// <summary>Module files in dependency order, from <c>modprobe --show-depends</c> against the guest kernel's tree.</summary>
    private static async Task<IReadOnlyList<string>> ResolveModulesAsync(string release, CancellationToken cancellationToken)
    {
        var files = new List<string>();
        foreach (var module in Modules)
        {
            var result = await Cli.Wrap("modprobe").WithArguments(["-S", release, "--show-depends", module])
                .WithValidation(CommandResultValidation.None).ExecuteBufferedAsync(cancellationToken);
            if (result.ExitCode != 0)
            {
                throw new InvalidOperationException($"the guest kernel {release} has no module {module}: {result.StandardError.Trim()}");
            }

            foreach (var line in result.StandardOutput.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            {
                // "builtin NAME" needs nothing; "insmod PATH [params]" names a file.
                var parts = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                if (parts is ["insmod", var path, ..] && !files.Contains(path))
                {
                    if (!path.EndsWith(".ko", StringComparison.Ordinal))
                    {
                        throw new InvalidOperationException($"module {path} is compressed; busybox insmod in the initramfs needs plain .ko files");
                    }

                    files.Add(path);
                }
            }
        }

        return files;
    }

    private static async Task<string> HashFileAsync(string path, CancellationToken cancellationToken)
    {
        await using var stream = File.OpenRead(path);
        return Convert.ToHexStringLower(await SHA256.HashDataAsync(stream, cancellationToken));
    }

    /// <summary>The kernel command line parameters init understands.</summary>
    public static string CommandLine(string token, string hostname, long tscKhz, bool probe)
    {
        var line = new StringBuilder("console=ttyS0 quiet panic=-1 no_timer_check i8042.noaux i8042.nomux i8042.nopnp");
        if (tscKhz > 0)
        {
            // Under TCG the kernel's PIT-based TSC calibration sometimes never finishes; give it the host's rate.
            line.Append(CultureInfo.InvariantCulture, $" tsc_early_khz={tscKhz}");
        }

        line.Append(CultureInfo.InvariantCulture, $" airlock.hostname={hostname}");
        line.Append(probe ? " airlock.probe=1" : $" airlock.token={token}");
        return line.ToString();
    }

    /// <summary>
    /// pid 1 of the initramfs. The token on the kernel command line is a boot token only: airlockd replaces it through
    /// SetIdentity before the sandbox is handed to anyone.
    /// </summary>
    private const string Init = """
        #!/bin/busybox sh
        /bin/busybox --install -s /bin
        export PATH=/bin
        mount -t proc proc /proc
        mount -t sysfs sys /sys
        mount -t devtmpfs dev /dev
        for arg in $(cat /proc/cmdline); do
          case "$arg" in
            airlock.token=*) token="${arg#airlock.token=}" ;;
            airlock.hostname=*) name="${arg#airlock.hostname=}" ;;
            airlock.probe=1) probe=1 ;;
          esac
        done
        if [ -n "$probe" ]; then echo "AIRLOCK-PROBE-OK" > /dev/ttyS0; poweroff -f; fi
        while read -r module; do insmod "/lib/modules/$module" 2>/dev/null; done < /lib/modules/order
        i=0
        while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
        mount -t ext4 -o noatime,noinit_itable /dev/vda /newroot || { echo "airlock-init: cannot mount /dev/vda" > /dev/ttyS0; poweroff -f; }
        mkdir -p /newroot/.airlock
        mount -t tmpfs -o mode=0755,size=64m,nosuid,nodev airlock /newroot/.airlock
        mkdir /newroot/.airlock/bin
        cp /airlock/tini /airlock/airlock-guest /newroot/.airlock/bin/
        cp /airlock/seccomp.bpf /newroot/.airlock/seccomp.bpf
        mount -o remount,ro /newroot/.airlock
        hostname "${name:-sandbox}"
        ip link set lo up
        ip link set eth0 up
        ip addr add 10.254.0.2/24 dev eth0
        ip route add default via 10.254.0.1
        mount --move /proc /newroot/proc
        mount --move /sys /newroot/sys
        mount --move /dev /newroot/dev
        mkdir -p /newroot/dev/pts /newroot/dev/shm /newroot/run
        mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /newroot/dev/pts
        mount -t tmpfs -o mode=1777,nosuid,nodev shm /newroot/dev/shm
        mount -t tmpfs -o mode=0755,nosuid,nodev run /newroot/run
        mount -t cgroup2 cgroup2 /newroot/sys/fs/cgroup 2>/dev/null
        export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
        export AIRLOCK_ACCESS_TOKEN="$token"
        exec switch_root /newroot /.airlock/bin/tini -s -- /.airlock/bin/airlock-guest --listen 10.254.0.2:49983 --default-user user --confine-filter /.airlock/seccomp.bpf --harden-guest
        """;
}
