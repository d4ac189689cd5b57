using System.Runtime.InteropServices;

namespace Airlock.Guest;

/// <summary>The calls of the confinement shim (<see cref="ConfinementShim"/>).</summary>
internal static partial class NativeMethods
{
    /// <summary>x86_64 <c>seccomp</c>: https://man7.org/linux/man-pages/man2/seccomp.2.html</summary>
    internal const nint SysSeccomp = 317;

    internal const nint SeccompSetModeFilter = 1;

    /// <summary>PR_SET_NO_NEW_PRIVS: https://man7.org/linux/man-pages/man2/pr_set_no_new_privs.2const.html</summary>
    internal const int PrSetNoNewPrivs = 38;

    /// <summary>struct sock_fprog (linux/filter.h): the number of 8-byte instructions and a pointer to them.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal unsafe struct SockFprog
    {
        public ushort Length;
        public byte* Filter;
    }

    /// <summary>https://man7.org/linux/man-pages/man2/syscall.2.html, for <c>seccomp(op, flags, args)</c>.</summary>
    [LibraryImport("libc", EntryPoint = "syscall", SetLastError = true)]
    internal static unsafe partial nint seccomp(nint number, nint operation, nint flags, SockFprog* program);

    /// <summary>https://man7.org/linux/man-pages/man3/exec.3.html — returns only on failure.</summary>
    [LibraryImport("libc", SetLastError = true)]
    internal static unsafe partial int execvp(byte* file, byte** argv);

    /// <summary>https://man7.org/linux/man-pages/man2/sigprocmask.2.html</summary>
    [LibraryImport("libc", SetLastError = true)]
    internal static unsafe partial int sigprocmask(int how, byte* set, byte* oldSet);

    /// <summary>https://man7.org/linux/man-pages/man2/signal.2.html — SIG_DFL is 0.</summary>
    [LibraryImport("libc", SetLastError = true)]
    internal static partial nint signal(int number, nint handler);
}
