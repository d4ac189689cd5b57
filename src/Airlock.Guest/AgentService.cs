using System.Runtime.InteropServices;
using System.Text;
using Airlock.Envd.Connect;
using Airlock.Envd.Protocol.Agent;

namespace Airlock.Guest;

/// <summary>
/// Airlock's <c>airlock.agent.v1.Agent</c> service: after a snapshot restore or a resume, airlockd gives the guest its
/// own identity (token, hostname, machine-id, entropy, clock, environment) before the sandbox is handed out.
/// </summary>
internal sealed partial class AgentService(AgentState state, ILogger<AgentService> logger)
{
    public Task HandleAsync(HttpContext context)
    {
        var method = context.Request.RouteValues["method"] as string;
        return method switch
        {
            "SetIdentity" => ConnectRpc.UnaryAsync(context, SetIdentityRequest.Parser, (request, _) => ValueTask.FromResult<Google.Protobuf.IMessage>(SetIdentity(request))),
            _ => ConnectRpc.WriteErrorAsync(context, new ConnectException(ConnectCodes.NotFound, $"airlock.agent.v1.Agent has no method '{method}'")),
        };
    }

    private SetIdentityResponse SetIdentity(SetIdentityRequest request)
    {
        if (request.AccessToken.Length < 16)
        {
            throw new ConnectException(ConnectCodes.InvalidArgument, "access_token must be at least 16 characters");
        }

        if (request.MachineId.Length > 0 && (request.MachineId.Length != 32 || !request.MachineId.All(char.IsAsciiHexDigitLower)))
        {
            throw new ConnectException(ConnectCodes.InvalidArgument, "machine_id must be 32 lowercase hex characters");
        }

        var root = NativeMethods.geteuid() == 0;
        if (root)
        {
            // Only an agent that owns the guest (microvm, pid 1's child as root) may change the machine's identity.
            if (request.UnixTimeNs > 0)
            {
                var time = new NativeMethods.Timespec { Seconds = request.UnixTimeNs / 1_000_000_000, Nanoseconds = request.UnixTimeNs % 1_000_000_000 };
                Check(NativeMethods.clock_settime(0, ref time), "clock_settime");
            }

            if (request.Hostname.Length > 0)
            {
                var name = Encoding.ASCII.GetBytes(request.Hostname);
                Check(NativeMethods.sethostname(name, (nuint)name.Length), "sethostname");
                TryWrite("/etc/hostname", request.Hostname + "\n", 0x1A4); // 0644
            }

            if (request.MachineId.Length > 0)
            {
                TryWrite("/etc/machine-id", request.MachineId + "\n", 0x124); // 0444, as systemd makes it
            }

            if (!request.Entropy.IsEmpty)
            {
                AddEntropy(request.Entropy.Span);
            }
        }

        if (request.ReplaceEnvs)
        {
            state.SetEnvironment(new Dictionary<string, string>(request.Envs, StringComparer.Ordinal));
        }

        state.SetToken(request.AccessToken);
        return new SetIdentityResponse { Kernel = File.ReadAllText("/proc/sys/kernel/osrelease").Trim(), Hostname = System.Net.Dns.GetHostName() };
    }

    /// <summary>
    /// Writes an identity file through a temporary sibling renamed into place: whatever code running as root in the
    /// guest left at the path (a FIFO would hold an open for writing until a reader came) is replaced, never opened.
    /// </summary>
    private void TryWrite(string path, string content, uint mode)
    {
        var temporary = $"{path}.airlock-{Guid.NewGuid():N}";
        try
        {
            using (var file = new FileStream(temporary, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1))
            {
                NativeMethods.fchmod(file.SafeFileHandle, mode);
                file.Write(Encoding.UTF8.GetBytes(content));
            }

            File.Move(temporary, path, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            IdentityFileFailed(logger, path, e.Message);
            File.Delete(temporary);
        }
    }

    /// <summary>
    /// Credits the bytes to the kernel's pool (RNDADDENTROPY), so the guest's random numbers diverge from its clones'.
    /// The device is opened without waiting (a FIFO put in its place would block) and must be the kernel's urandom
    /// (character device 1:9); anything else is an error, as clones must not share their random state silently.
    /// </summary>
    private static unsafe void AddEntropy(ReadOnlySpan<byte> entropy)
    {
        const uint RndAddEntropy = 0x40085203;
        const ulong Urandom = 0x109; // makedev(1, 9)
        var buffer = new byte[8 + entropy.Length];
        BitConverter.TryWriteBytes(buffer.AsSpan(0, 4), entropy.Length * 8);
        BitConverter.TryWriteBytes(buffer.AsSpan(4, 4), entropy.Length);
        entropy.CopyTo(buffer.AsSpan(8));
        using var random = NativeMethods.open("/dev/urandom", NativeMethods.OWrOnly | NativeMethods.ONonblock | NativeMethods.ONoctty | NativeMethods.OCloexec);
        if (random.IsInvalid)
        {
            Check(-1, "open(/dev/urandom)");
        }

        if (FileStatus.Fstat(random, "/dev/urandom") is not { Type: FileStatus.CharacterDevice, Rdev: Urandom })
        {
            throw new ConnectException(ConnectCodes.FailedPrecondition, "/dev/urandom is not the kernel's random device (1:9)");
        }

        fixed (byte* pointer = buffer)
        {
            Check(NativeMethods.ioctl(random, RndAddEntropy, pointer), "ioctl(RNDADDENTROPY)");
        }
    }

    private static void Check(int result, string call)
    {
        if (result != 0)
        {
            throw new ConnectException(ConnectCodes.Internal, $"{call} failed: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}");
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "could not write {Path}: {Reason}")]
    private static partial void IdentityFileFailed(ILogger logger, string path, string reason);
}
