namespace Airlock.Boundaries.MicroVm;

public sealed record QemuOptions
{
    /// <summary>airlockd's data directory: sandbox state under <c>sandboxes/&lt;id&gt;</c>, images and snapshots under <c>vm/</c>.</summary>
    public required string DataDir { get; init; }

    public string Qemu { get; init; } = "qemu-system-x86_64";

    public string QemuImg { get; init; } = "qemu-img";

    /// <summary>Guest kernel; null picks the newest <c>/boot/vmlinuz-*-cloud-amd64</c> (Debian's linux-image-cloud-amd64).</summary>
    public string? Kernel { get; init; }

    public string Busybox { get; init; } = "/bin/busybox";

    /// <summary>pid 1 inside the guest (Debian's tini, static build).</summary>
    public string Tini { get; init; } = "/usr/bin/tini-static";

    /// <summary>"auto" (prove KVM with a probe boot, else TCG), "kvm" or "tcg".</summary>
    public string Accelerator { get; init; } = "auto";

    /// <summary>How long the KVM probe boot may take (a working KVM boots the probe in well under a second).</summary>
    public TimeSpan KvmProbeTimeout { get; init; } = TimeSpan.FromSeconds(8);

    /// <summary>How long the TCG probe boot may take (about 3 s on a 2-core host).</summary>
    public TimeSpan ProbeTimeout { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>QEMU runs as host uid/gid <c>UidBase + network index</c>, a uid no host account uses.</summary>
    public int UidBase { get; init; } = 200000;

    public string CgroupRoot { get; init; } = "/sys/fs/cgroup";

    /// <summary>Size of the guest's root filesystem (sparse; the template is a read-only backing file).</summary>
    public int DiskSizeMiB { get; init; } = 4096;

    /// <summary>Memory QEMU may use beyond the guest's RAM (device emulation, the TCG translation cache).</summary>
    public int OverheadMiB { get; init; } = 192;

    /// <summary>Start sandboxes from a per-template pre-booted snapshot (false: every sandbox boots).</summary>
    public bool Snapshots { get; init; } = true;

    /// <summary>How long a guest may take from power-on to a healthy agent.</summary>
    public TimeSpan BootTimeout { get; init; } = TimeSpan.FromSeconds(90);

    public int AgentPort { get; init; } = 49983;

    /// <summary>Kernel/initramfs, template disk images and snapshots; may be shared by several airlockd (file-locked).</summary>
    public string? CacheDir { get; init; }

    public string VmDir => CacheDir ?? Path.Combine(DataDir, "vm");
}
