using System.Security.Cryptography;
using System.Text.Json;
using Airlock.Boundaries.Seccomp;

namespace Airlock.Boundaries.Container;

/// <summary>
/// Airlock's seccomp profile for the container boundary: deny by default (ENOSYS, so programs probing a syscall the
/// profile does not know fall back as they would on an older kernel), an allowlist of what ordinary Linux programs
/// use, and explicit EPERM for the calls that reach the kernel's larger attack surface (the same set the process
/// boundary denies). The runtime compiles it with libseccomp; the report names it by the SHA-256 of its JSON.
/// </summary>
internal static class ContainerSeccomp
{
    public const string Name = "airlock-container-v1";

    private const uint Eperm = 1;
    private const uint Enosys = 38;

    /// <summary>Every clone flag that creates a namespace, as one mask (the process boundary's list).</summary>
    private static readonly ulong NamespaceFlags = SeccompProfile.NamespaceFlags.Aggregate(0UL, (mask, flag) => mask | flag);

    /// <summary>TIOCSTI and TIOCLINUX, as the process boundary denies them.</summary>
    private static IReadOnlyList<ulong> DeniedIoctls => SeccompProfile.DeniedIoctls;

    /// <summary>The allowlist, grouped by what programs use it for (x86_64 names; unknown names are skipped by the runtime).</summary>
    internal static readonly IReadOnlyList<string> Allowed =
    [
        // files and directories
        "read", "write", "open", "openat", "openat2", "close", "close_range", "creat", "lseek", "pread64", "pwrite64",
        "readv", "writev", "preadv", "pwritev", "preadv2", "pwritev2", "stat", "fstat", "lstat", "newfstatat", "statx",
        "statfs", "fstatfs", "access", "faccessat", "faccessat2", "readlink", "readlinkat", "getdents", "getdents64",
        "getcwd", "chdir", "fchdir", "rename", "renameat", "renameat2", "mkdir", "mkdirat", "rmdir", "link", "linkat",
        "unlink", "unlinkat", "symlink", "symlinkat", "chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown", "lchown",
        "fchownat", "umask", "truncate", "ftruncate", "fallocate", "fsync", "fdatasync", "sync", "syncfs",
        "sync_file_range", "utime", "utimes", "utimensat", "futimesat", "mknod", "mknodat", "dup", "dup2", "dup3",
        "fcntl", "flock", "ioctl", "pipe", "pipe2", "sendfile", "splice", "tee", "vmsplice", "copy_file_range",
        "fadvise64", "readahead", "getxattr", "lgetxattr", "fgetxattr", "setxattr", "lsetxattr", "fsetxattr",
        "listxattr", "llistxattr", "flistxattr", "removexattr", "lremovexattr", "fremovexattr", "inotify_init",
        "inotify_init1", "inotify_add_watch", "inotify_rm_watch", "memfd_create",
        // memory
        "mmap", "munmap", "mprotect", "mremap", "msync", "mincore", "madvise", "brk", "mlock", "mlock2", "munlock",
        "mlockall", "munlockall", "membarrier", "pkey_alloc", "pkey_free", "pkey_mprotect", "remap_file_pages",
        "get_mempolicy",
        // processes, threads, signals, time
        "clone", "fork", "vfork", "execve", "execveat", "exit", "exit_group", "wait4", "waitid", "kill", "tkill",
        "tgkill", "getpid", "getppid", "gettid", "getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid",
        "getgroups", "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setgroups", "setfsuid",
        "setfsgid", "getpgid", "setpgid", "getpgrp", "getsid", "setsid", "prctl", "arch_prctl", "set_tid_address",
        "set_robust_list", "get_robust_list", "futex", "futex_waitv", "rseq", "sched_yield", "sched_getaffinity",
        "sched_setaffinity", "sched_getparam", "sched_setparam", "sched_getscheduler", "sched_setscheduler",
        "sched_get_priority_max", "sched_get_priority_min", "sched_rr_get_interval", "sched_getattr", "sched_setattr",
        "getpriority", "setpriority", "getrlimit", "setrlimit", "prlimit64", "getrusage", "times", "capget", "capset",
        "personality", "pidfd_open", "pidfd_send_signal", "rt_sigaction", "rt_sigprocmask", "rt_sigreturn",
        "rt_sigpending", "rt_sigtimedwait", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "rt_sigsuspend", "sigaltstack",
        "signalfd", "signalfd4", "pause", "alarm", "nanosleep", "clock_nanosleep", "getitimer", "setitimer",
        "timer_create", "timer_settime", "timer_gettime", "timer_getoverrun", "timer_delete", "timerfd_create",
        "timerfd_settime", "timerfd_gettime", "clock_gettime", "clock_getres", "gettimeofday", "time", "uname",
        "sysinfo", "getrandom", "getcpu", "ioprio_get", "ioprio_set", "restart_syscall", "seccomp",
        "landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self",
        // waiting and IPC inside the sandbox
        "eventfd", "eventfd2", "epoll_create", "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "epoll_pwait2",
        "poll", "ppoll", "select", "pselect6", "shmget", "shmat", "shmdt", "shmctl", "semget", "semop", "semtimedop",
        "semctl", "msgget", "msgsnd", "msgrcv", "msgctl", "mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive",
        "mq_notify", "mq_getsetattr", "io_setup", "io_destroy", "io_submit", "io_cancel", "io_getevents", "io_pgetevents",
        // sockets (raw and packet sockets need CAP_NET_RAW, which no sandbox process holds)
        "socket", "socketpair", "bind", "connect", "listen", "accept", "accept4", "getsockname", "getpeername", "sendto",
        "recvfrom", "sendmsg", "recvmsg", "sendmmsg", "recvmmsg", "shutdown", "setsockopt", "getsockopt",
    ];

    /// <summary>
    /// Masked-equality tests (over the low 32 bits) that together match every 32-bit value except
    /// <paramref name="excluded"/>: walk the bits from the top, and wherever no excluded value continues the prefix,
    /// that prefix is one allowed branch.
    /// </summary>
    internal static IReadOnlyList<(ulong Mask, ulong Value)> AllBut(IReadOnlyCollection<ulong> excluded)
    {
        var branches = new List<(ulong, ulong)>();
        Walk(0, 0, 31, excluded);
        return branches;

        void Walk(ulong mask, ulong value, int bit, IReadOnlyCollection<ulong> values)
        {
            if (bit < 0)
            {
                return; // the prefix is a whole excluded value
            }

            var m = mask | (1UL << bit);
            foreach (var b in new[] { 0UL, 1UL })
            {
                var v = value | (b << bit);
                var rest = values.Where(x => ((x >> bit) & 1) == b).ToList();
                if (rest.Count == 0)
                {
                    branches.Add((m, v));
                }
                else
                {
                    Walk(m, v, bit - 1, rest);
                }
            }
        }
    }

    /// <summary>The profile as the OCI runtime takes it, and the name the report carries.</summary>
    public static (OciSeccomp Profile, string Description) Build()
    {
        var denied = SeccompProfile.DeniedSyscalls.ToHashSet(StringComparer.Ordinal);
        var rules = new List<OciSyscallRule>
        {
            new() { Names = Allowed.Where(n => n is not ("clone" or "ioctl") && !denied.Contains(n)).ToList(), Action = "SCMP_ACT_ALLOW" },
            // clone only without namespace flags; clone3 hides its flags in memory seccomp cannot read, so it is
            // unavailable and libc falls back to clone.
            new() { Names = ["clone"], Action = "SCMP_ACT_ALLOW", Args = [new OciSyscallArg(0, NamespaceFlags, 0, "SCMP_CMP_MASKED_EQ")] },
            new() { Names = ["clone3"], Action = "SCMP_ACT_ERRNO", ErrnoRet = Enosys },
            new() { Names = SeccompProfile.DeniedSyscalls, Action = "SCMP_ACT_ERRNO", ErrnoRet = Eperm },
        };

        // ioctl: libseccomp lets an unconditional allow swallow conditional denials of the same syscall, so ioctl is
        // allowed only through conditions: one masked compare per branch of the bit trie that avoids the denied
        // requests. Only the low 32 bits of a request count in the kernel, so only those are compared (CVE-2019-10063).
        foreach (var request in DeniedIoctls)
        {
            rules.Add(new() { Names = ["ioctl"], Action = "SCMP_ACT_ERRNO", ErrnoRet = Eperm, Args = [new OciSyscallArg(1, 0xFFFFFFFF, request, "SCMP_CMP_MASKED_EQ")] });
        }

        foreach (var (mask, value) in AllBut(DeniedIoctls))
        {
            rules.Add(new() { Names = ["ioctl"], Action = "SCMP_ACT_ALLOW", Args = [new OciSyscallArg(1, mask, value, "SCMP_CMP_MASKED_EQ")] });
        }

        var profile = new OciSeccomp
        {
            DefaultAction = "SCMP_ACT_ERRNO",
            DefaultErrnoRet = Enosys,
            Architectures = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            Syscalls = rules,
        };
        var json = JsonSerializer.SerializeToUtf8Bytes(profile, OciJsonContext.Default.OciSeccomp);
        return (profile, $"{Name} sha256:{Convert.ToHexStringLower(SHA256.HashData(json))}");
    }
}
