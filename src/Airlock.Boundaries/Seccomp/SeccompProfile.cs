using System.Runtime.InteropServices;
using System.Security.Cryptography;

namespace Airlock.Boundaries.Seccomp;

/// <summary>
/// Airlock's own seccomp filter for the process boundary, compiled to classic BPF with libseccomp (the library
/// resolves syscall numbers and emits the BPF; no maintained .NET binding exists, so the few calls are imported here).
/// Everything is allowed except what lets code inside reach the kernel's larger attack surface or the host:
/// debugging other processes, mounting, new namespaces, kernel keyrings, eBPF, perf, module loading, clock changes,
/// and terminal injection ioctls.
/// </summary>
public static partial class SeccompProfile
{
    public const string Name = "airlock-process-v1";

    private const uint ActAllow = 0x7fff0000;
    private const int Eperm = 1;
    private const int Enosys = 38;
    private const int CmpMaskedEq = 7;

    /// <summary>Denied outright with EPERM.</summary>
    public static readonly IReadOnlyList<string> DeniedSyscalls =
    [
        "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
        "mount", "umount2", "pivot_root", "chroot", "fsopen", "fsconfig", "fsmount", "fspick", "open_tree", "move_mount", "mount_setattr",
        "unshare", "setns",
        "swapon", "swapoff", "reboot", "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
        "keyctl", "add_key", "request_key",
        "bpf", "perf_event_open", "userfaultfd", "open_by_handle_at", "name_to_handle_at",
        "iopl", "ioperm", "syslog", "acct", "quotactl", "quotactl_fd", "lookup_dcookie", "nfsservctl", "vhangup",
        "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "stime",
        "create_module", "get_kernel_syms", "query_module", "uselib", "ustat", "sysfs", "_sysctl", "vm86", "vm86old",
        "fanotify_init", "io_uring_setup", "io_uring_enter", "io_uring_register",
    ];

    /// <summary>clone flags that create namespaces (CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET, NEWTIME).</summary>
    internal static readonly ulong[] NamespaceFlags = [0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000, 0x00000080];

    /// <summary>TIOCSTI (push input into a terminal) and TIOCLINUX (console selection paste).</summary>
    internal static readonly ulong[] DeniedIoctls = [0x5412, 0x541C];

    /// <summary>Compiles the filter to BPF; the hash names exactly what was loaded.</summary>
    public static (byte[] Bpf, string Description) Compile(string scratchDirectory)
    {
        var ctx = seccomp_init(ActAllow);
        if (ctx == IntPtr.Zero)
        {
            throw new InvalidOperationException("seccomp_init failed");
        }

        try
        {
            foreach (var name in DeniedSyscalls)
            {
                var nr = seccomp_syscall_resolve_name(name);
                if (nr < 0)
                {
                    continue; // not a syscall on this architecture (e.g. vm86 on x86_64)
                }

                Check(seccomp_rule_add_array(ctx, Errno(Eperm), nr, 0, null), name);
            }

            // clone3 passes its flags in a struct seccomp cannot read: make it unavailable so libc falls back to clone.
            Check(seccomp_rule_add_array(ctx, Errno(Enosys), seccomp_syscall_resolve_name("clone3"), 0, null), "clone3");
            var clone = seccomp_syscall_resolve_name("clone");
            foreach (var flag in NamespaceFlags)
            {
                Check(seccomp_rule_add_array(ctx, Errno(Eperm), clone, 1, [new ArgCmp { Arg = 0, Op = CmpMaskedEq, DatumA = flag, DatumB = flag }]), "clone");
            }

            // Compare only the low 32 bits of the request: the kernel ignores the high ones (CVE-2019-10063).
            var ioctl = seccomp_syscall_resolve_name("ioctl");
            foreach (var request in DeniedIoctls)
            {
                Check(seccomp_rule_add_array(ctx, Errno(Eperm), ioctl, 1, [new ArgCmp { Arg = 1, Op = CmpMaskedEq, DatumA = 0xFFFFFFFF, DatumB = request }]), "ioctl");
            }

            Directory.CreateDirectory(scratchDirectory);
            var path = Path.Combine(scratchDirectory, $".seccomp-{Guid.NewGuid():N}.bpf");
            try
            {
                using (var file = new FileStream(path, FileMode.CreateNew, FileAccess.Write))
                {
                    Check(seccomp_export_bpf(ctx, (int)file.SafeFileHandle.DangerousGetHandle()), "export");
                }

                var bpf = File.ReadAllBytes(path);
                return (bpf, $"{Name} sha256:{Convert.ToHexStringLower(SHA256.HashData(bpf))}");
            }
            finally
            {
                File.Delete(path);
            }
        }
        finally
        {
            seccomp_release(ctx);
        }
    }

    private static uint Errno(int errno) => 0x00050000u | (uint)(errno & 0xffff);

    private static void Check(int result, string what)
    {
        if (result < 0)
        {
            throw new InvalidOperationException($"libseccomp refused the rule for {what} (error {-result})");
        }
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct ArgCmp
    {
        public uint Arg;
        public int Op;
        public ulong DatumA;
        public ulong DatumB;
    }

    private const string Library = "libseccomp.so.2";

    [LibraryImport(Library)]
    private static partial IntPtr seccomp_init(uint defaultAction);

    [LibraryImport(Library)]
    private static partial void seccomp_release(IntPtr ctx);

    [LibraryImport(Library, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int seccomp_syscall_resolve_name(string name);

    [LibraryImport(Library)]
    private static partial int seccomp_rule_add_array(IntPtr ctx, uint action, int syscall, uint argCount, [In] ArgCmp[]? args);

    [LibraryImport(Library)]
    private static partial int seccomp_export_bpf(IntPtr ctx, int fd);
}
