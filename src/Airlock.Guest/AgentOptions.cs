using System.Net;

namespace Airlock.Guest;

/// <summary>How the agent was started.</summary>
internal sealed record AgentOptions
{
    public required IPEndPoint Listen { get; init; }

    public required string AccessToken { get; init; }

    /// <summary>The user commands run as when a request names none (E2B's default is <c>user</c>).</summary>
    public string? DefaultUser { get; init; }

    /// <summary>The environment every command inherits: the agent's own minus AIRLOCK_* variables.</summary>
    public required IReadOnlyDictionary<string, string> SandboxEnvironment { get; init; }

    /// <summary>
    /// RLIMIT_NPROC for the commands the agent starts (null: none). Set below the sandbox's pids limit, so a fork bomb
    /// runs out of processes before the agent does and the API keeps answering.
    /// </summary>
    public int? CommandProcesses { get; init; }

    /// <summary>
    /// A classic-BPF seccomp filter (the process boundary's, compiled on the host) that commands of users other than
    /// root start under (<see cref="ConfinementShim"/>); null: none (the process and container boundaries filter the
    /// whole sandbox already).
    /// </summary>
    public string? ConfineFilter { get; init; }

    /// <summary>Confine root's commands too (off: root in the guest keeps its rights, as E2B's templates expect).</summary>
    public bool ConfineRoot { get; init; }

    /// <summary>
    /// Harden the kernel the agent runs on at start (<see cref="GuestHardening"/>): sysctls, and a capped cgroup for
    /// confined commands. Only where the agent owns the kernel (a microVM's guest), never on a shared one.
    /// </summary>
    public bool HardenGuest { get; init; }

    private const string Usage = "usage: airlock-guest [--listen ADDR:PORT] [--default-user NAME] [--command-processes N] [--confine-filter BPF] [--confine-root] [--harden-guest]";

    public static AgentOptions Parse(string[] args)
    {
        var listen = $"10.254.0.2:{Envd.EnvdProtocol.Port}";
        string? defaultUser = null, confineFilter = null;
        int? commandProcesses = null;
        bool confineRoot = false, hardenGuest = false;
        for (var i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--listen" when i + 1 < args.Length:
                    listen = args[++i];
                    break;
                case "--default-user" when i + 1 < args.Length:
                    defaultUser = args[++i];
                    break;
                case "--command-processes" when i + 1 < args.Length && int.TryParse(args[i + 1], System.Globalization.CultureInfo.InvariantCulture, out var n) && n > 0:
                    commandProcesses = n;
                    i++;
                    break;
                case "--confine-filter" when i + 1 < args.Length:
                    confineFilter = args[++i];
                    break;
                case "--confine-root":
                    confineRoot = true;
                    break;
                case "--harden-guest":
                    hardenGuest = true;
                    break;
                default:
                    throw new ArgumentException($"unknown argument '{args[i]}'; {Usage}");
            }
        }

        if (!IPEndPoint.TryParse(listen, out var endpoint))
        {
            throw new ArgumentException($"--listen '{listen}' is not ADDRESS:PORT");
        }

        var token = Environment.GetEnvironmentVariable("AIRLOCK_ACCESS_TOKEN");
        if (string.IsNullOrEmpty(token))
        {
            throw new ArgumentException("AIRLOCK_ACCESS_TOKEN is not set; the agent refuses to serve without an access token");
        }

        var environment = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (System.Collections.DictionaryEntry entry in Environment.GetEnvironmentVariables())
        {
            var name = (string)entry.Key;
            if (!name.StartsWith("AIRLOCK_", StringComparison.Ordinal) && !name.StartsWith("DOTNET_", StringComparison.Ordinal))
            {
                environment[name] = (string?)entry.Value ?? string.Empty;
            }
        }

        Environment.SetEnvironmentVariable("AIRLOCK_ACCESS_TOKEN", null);
        if (confineFilter is not null && !File.Exists(confineFilter))
        {
            throw new ArgumentException($"--confine-filter '{confineFilter}' does not exist");
        }

        if (confineRoot && confineFilter is null)
        {
            throw new ArgumentException("--confine-root needs --confine-filter");
        }

        return new AgentOptions
        {
            Listen = endpoint, AccessToken = token, DefaultUser = defaultUser, SandboxEnvironment = environment, CommandProcesses = commandProcesses,
            ConfineFilter = confineFilter, ConfineRoot = confineRoot, HardenGuest = hardenGuest,
        };
    }
}
