namespace Airlock.Sdk;

/// <summary>One event from a running command: a chunk of output, or its exit.</summary>
public abstract record CommandOutput;

/// <summary>Text the command wrote to stdout (UTF-8 decoded; a character split across chunks is kept whole).</summary>
public sealed record CommandStdout(string Text) : CommandOutput;

/// <summary>Text the command wrote to stderr.</summary>
public sealed record CommandStderr(string Text) : CommandOutput;

/// <summary>The command ended. Always the last event.</summary>
/// <param name="ExitCode">Exit code (-1 when it was killed by a signal and the agent reports none).</param>
/// <param name="Status">The agent's status text, e.g. <c>exit status 1</c> or <c>signal: killed</c>.</param>
/// <param name="Error">Why it could not run or ended abnormally, when the agent says so.</param>
public sealed record CommandExit(int ExitCode, string Status, string? Error) : CommandOutput;

/// <summary>Everything a finished command produced.</summary>
public sealed record CommandResult(int ExitCode, string Stdout, string Stderr, string? Error);
