namespace Airlock.Envd.Client;

/// <summary>Where an <see cref="EnvdClient"/> sends its calls and what it adds to each.</summary>
public sealed record EnvdClientOptions
{
    public required Uri BaseAddress { get; init; }

    public string? AccessToken { get; init; }

    /// <summary>Extra headers on every call (E2B's <c>E2b-Sandbox-Id</c>/<c>E2b-Sandbox-Port</c> when going through airlockd).</summary>
    public IReadOnlyDictionary<string, string> Headers { get; init; } = new Dictionary<string, string>();

    /// <summary>Use the protobuf codec instead of JSON.</summary>
    public bool UseBinaryFormat { get; init; }
}

/// <summary>A command to start in a sandbox.</summary>
public sealed record ProcessSpec
{
    public required string Command { get; init; }

    public IReadOnlyList<string> Args { get; init; } = [];

    public string? Cwd { get; init; }

    public IReadOnlyDictionary<string, string>? Env { get; init; }

    /// <summary>The user to run as; null for the sandbox's default user.</summary>
    public string? User { get; init; }

    /// <summary>Keep stdin open for <see cref="EnvdClient.SendInputAsync"/>.</summary>
    public bool Stdin { get; init; }

    /// <summary>A tag to find the process by later.</summary>
    public string? Tag { get; init; }
}

/// <summary>One event of a running process's stream.</summary>
public abstract record ProcessOutput;

public sealed record ProcessStarted(uint Pid) : ProcessOutput;

public sealed record ProcessStdout(ReadOnlyMemory<byte> Data) : ProcessOutput;

public sealed record ProcessStderr(ReadOnlyMemory<byte> Data) : ProcessOutput;

/// <summary>The end of a process: its exit code (-1 when a signal ended it), envd's status text and any error.</summary>
public sealed record ProcessExited(int ExitCode, string Status, string? Error) : ProcessOutput;

public sealed record ProcessSummary(uint Pid, string Command, IReadOnlyList<string> Args, string? Tag);

/// <summary>A file system entry; <see cref="Type"/> is <c>file</c>, <c>dir</c> or <c>symlink</c>.</summary>
public sealed record FileEntry(string Name, string Path, string Type, long Size, string? SymlinkTarget);

/// <summary>An error returned by the guest agent (or by airlockd in front of it).</summary>
public sealed class EnvdException(string code, int httpStatus, string message) : Exception(message)
{
    /// <summary>The Connect error code (<c>not_found</c>, <c>permission_denied</c>, ...).</summary>
    public string Code { get; } = code;

    public int HttpStatus { get; } = httpStatus;
}
