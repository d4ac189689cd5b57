using System.Runtime.ExceptionServices;
using System.Runtime.InteropServices;
using Airlock.Envd.Connect;

namespace Airlock.Guest;

/// <summary>
/// Runs file-system work with a user's file-system credentials, so the kernel checks every path the agent touches
/// for that user exactly as it would for a command the user runs (envd's semantics: a file operation made as a user is
/// subject to that user's permissions).
/// </summary>
/// <remarks>
/// <code>
/// caller ──► new thread ──► setgroups(user's groups)   raw syscall: glibc's wrapper would change every thread
///    │                      setfsgid(gid), setfsuid(uid) per-thread; fsuid != 0 drops DAC_OVERRIDE, FOWNER, ...
///    │                      verify both took
///    │                      action()                   open, mkdir, rename, unlink, lstat, opendir as the user
///    ◄──── result or ────── thread exits               its credentials die with it; no other thread ever had them
///          exception
/// </code>
/// Only path-based calls need this: a handle opened here may be read and written on any thread afterwards, since
/// permissions are checked at open.
/// </remarks>
internal static class UserCredentials
{
    public static T Run<T>(UserAccount account, uint[] groups, Func<T> action)
    {
        T result = default!;
        ExceptionDispatchInfo? failure = null;
        var thread = new Thread(() =>
        {
            try
            {
                Assume(account, groups);
                result = action();
            }
            catch (Exception e)
            {
                failure = ExceptionDispatchInfo.Capture(e);
            }
        })
        {
            IsBackground = true,
            Name = "airlock-as-user",
        };
        thread.Start();
        thread.Join();
        failure?.Throw();
        return result;
    }

    private static unsafe void Assume(UserAccount account, uint[] groups)
    {
        var setgroups = RuntimeInformation.ProcessArchitecture switch
        {
            Architecture.X64 => 116,
            Architecture.Arm64 => 159,
            var other => throw new PlatformNotSupportedException($"no setgroups syscall number for {other}"),
        };
        fixed (uint* list = groups)
        {
            if (NativeMethods.syscall(setgroups, groups.Length, list) != 0)
            {
                throw Failed(account, $"setgroups failed with errno {Marshal.GetLastPInvokeError()}");
            }
        }

        // Both calls return the previous id and never fail loudly; a second call answers what the id now is.
        NativeMethods.setfsgid(account.Gid);
        NativeMethods.setfsuid(account.Uid);
        if (NativeMethods.setfsgid(account.Gid) != (int)account.Gid || NativeMethods.setfsuid(account.Uid) != (int)account.Uid)
        {
            throw Failed(account, "setfsuid/setfsgid did not take");
        }
    }

    private static ConnectException Failed(UserAccount account, string why) =>
        new(ConnectCodes.Internal, $"cannot act as user '{account.Name}' for file operations: {why}");
}
