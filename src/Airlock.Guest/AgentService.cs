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
                TryWrite("/etc/hostname", request.Hostname + "\n");
            }

            if (request.MachineId.Length > 0)
            {
                TryWrite("/etc/machine-id", request.MachineId + "\n");
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

    private void TryWrite(string path, string content)
    {
        try
        {
            File.WriteAllText(path, content);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            IdentityFileFailed(logger, path, e.Message);
        }
    }

    /// <summary>Credits the bytes to the kernel's pool (RNDADDENTROPY), so the guest's random numbers diverge from its clones'.</summary>
    private static unsafe void AddEntropy(ReadOnlySpan<byte> entropy)
    {
        const uint RndAddEntropy = 0x40085203;
        var buffer = new byte[8 + entropy.Length];
        BitConverter.TryWriteBytes(buffer.AsSpan(0, 4), entropy.Length * 8);
        BitConverter.TryWriteBytes(buffer.AsSpan(4, 4), entropy.Length);
        entropy.CopyTo(buffer.AsSpan(8));
        using var random = File.Open("/dev/urandom", FileMode.Open, FileAccess.Write);
        fixed (byte* pointer = buffer)
        {
            Check(NativeMethods.ioctl((int)random.SafeFileHandle.DangerousGetHandle(), RndAddEntropy, pointer), "ioctl(RNDADDENTROPY)");
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
