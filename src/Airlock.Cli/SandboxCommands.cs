using System.CommandLine;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Airlock.Core.Api;
using Airlock.Sdk;
using Spectre.Console;

namespace Airlock.Cli;

/// <summary><c>airlock sandbox create|ls|exec|run|cp|kill</c>.</summary>
internal static partial class SandboxCommands
{
    public static Command Build(CliConsole console, GlobalOptions globals)
    {
        var command = new Command("sandbox", "Create, use and kill sandboxes")
        {
            Create(console, globals),
            List(console, globals),
            Exec(console, globals),
            Run(console, globals),
            Copy(console, globals),
            Pause(console, globals),
            Resume(console, globals),
            Kill(console, globals),
        };
        return command;
    }

    /// <summary>The options <c>create</c> and <c>run</c> share.</summary>
    private sealed class CreateOptions
    {
        public Option<string> Template { get; } = new("--template") { Description = "Template id", DefaultValueFactory = _ => "base" };
        public Option<string?> Risk { get; } = new("--risk") { Description = "Risk class: low (process), medium (container), high (microvm; server default)" };
        public Option<string?> Boundary { get; } = new("--boundary") { Description = "Explicit boundary: process, container or microvm" };
        public Option<bool> AllowDowngrade { get; } = new("--allow-downgrade") { Description = "Accept a weaker boundary if the asked one is unavailable (reported and audited)" };
        public Option<int?> Timeout { get; } = new("--timeout") { Description = "Seconds until the sandbox is killed (server default 300)" };
        public Option<string[]> Env { get; } = KeyValues.Option("--env", "Environment variable for every process (repeatable)");
        public Option<string[]> Metadata { get; } = KeyValues.Option("--metadata", "Metadata tag (repeatable)");
        public Option<int?> Memory { get; } = new("--memory-mb") { Description = "Memory limit in MiB" };
        public Option<int?> Cpus { get; } = new("--cpus") { Description = "CPU count" };
        public Option<int?> Disk { get; } = new("--disk-mb") { Description = "Writable disk in MiB (process and container: the quota of the sandbox's writable layer)" };
        public Option<bool> Cold { get; } = new("--cold") { Description = "microvm: boot the kernel instead of restoring the template's pre-booted snapshot" };
        public Option<bool> AutoPause { get; } = new("--auto-pause") { Description = "microvm and container: pause to disk instead of being killed at the timeout" };

        public CreateOptions()
        {
            Risk.AcceptOnlyFromAmong("low", "medium", "high");
            Boundary.AcceptOnlyFromAmong("process", "container", "microvm");
            Positive(Timeout);
            Positive(Memory);
            Positive(Cpus);
            Positive(Disk);
        }

        public void AddTo(Command command)
        {
            foreach (var option in new Option[] { Template, Risk, Boundary, AllowDowngrade, Timeout, Env, Metadata, Memory, Cpus, Disk, Cold, AutoPause })
            {
                command.Add(option);
            }
        }

        public SandboxCreateOptions Read(ParseResult parse) => new()
        {
            Template = parse.GetValue(Template)!,
            Risk = parse.GetValue(Risk),
            Boundary = parse.GetValue(Boundary),
            AllowDowngrade = parse.GetValue(AllowDowngrade),
            TimeoutSeconds = parse.GetValue(Timeout),
            EnvVars = KeyValues.ToDictionary(parse.GetValue(Env)),
            Metadata = KeyValues.ToDictionary(parse.GetValue(Metadata)),
            MemoryMB = parse.GetValue(Memory),
            CpuCount = parse.GetValue(Cpus),
            DiskMB = parse.GetValue(Disk),
            ColdBoot = parse.GetValue(Cold),
            AutoPause = parse.GetValue(AutoPause),
        };

        private static void Positive(Option<int?> option) => option.Validators.Add(r =>
        {
            if (r.GetValueOrDefault<int?>() is <= 0)
            {
                r.AddError($"{option.Name} must be a positive number.");
            }
        });
    }

    private static Command Create(CliConsole console, GlobalOptions globals)
    {
        var options = new CreateOptions();
        var json = new Option<bool>("--json") { Description = "Print the API response as JSON" };
        var command = new Command("create", "Create a sandbox and print its id");
        options.AddTo(command);
        command.Add(json);
        command.SetAction(AirlockCli.Guard(console, async (parse, cancellationToken) =>
        {
            using var client = globals.CreateClient(parse, console);
            var sandbox = await client.CreateSandboxAsync(options.Read(parse), cancellationToken);
            sandbox.Detach();
            if (parse.GetValue(json))
            {
                // The same document POST /sandboxes returned, including the envd access token.
                var detail = await client.GetAsync(sandbox.Id, cancellationToken);
                var created = new SandboxCreated
                {
                    SandboxId = sandbox.Id,
                    TemplateId = sandbox.TemplateId,
                    EnvdVersion = detail.EnvdVersion,
                    EnvdAccessToken = detail.EnvdAccessToken ?? "",
                    Domain = detail.Domain,
                    Boundary = sandbox.Boundary ?? detail.Boundary!,
                };
                await console.Out.WriteLineAsync(JsonSerializer.Serialize(created, CliJsonContext.Default.SandboxCreated));
                return AirlockCli.ExitOk;
            }

            await console.Out.WriteLineAsync(sandbox.Id);
            if (sandbox.Boundary is { } b)
            {
                console.ErrorUi.MarkupLine(CultureInfo.InvariantCulture, "[green]created[/] template {0}, boundary [bold]{1}[/] ({2}{3}{6}), kernel {4}, network {5}",
                    Markup.Escape(sandbox.TemplateId), Markup.Escape(b.Boundary), Markup.Escape(b.Driver),
                    b.Runtime is null ? "" : ", " + Markup.Escape(b.Runtime), Markup.Escape(b.Kernel), Markup.Escape(b.Network),
                    b.Accelerator is null ? "" : $", {Markup.Escape(b.Accelerator)}, {Markup.Escape(b.Machine ?? "")}, {Markup.Escape(b.StartedFrom ?? "")}");
                if (b.Downgrade is { } downgrade)
                {
                    console.WriteWarning("downgraded: " + downgrade);
                }
            }

            return AirlockCli.ExitOk;
        }));
        return command;
    }

    private static Command List(CliConsole console, GlobalOptions globals)
    {
        var state = new Option<string?>("--state") { Description = "Only sandboxes in these states (comma-separated: running,paused,killed...)" };
        var metadata = KeyValues.Option("--metadata", "Only sandboxes with this metadata (repeatable; all must match)");
        var json = new Option<bool>("--json") { Description = "Print JSON" };
        var command = new Command("ls", "List sandboxes") { state, metadata, json };
        command.Aliases.Add("list");
        command.SetAction(AirlockCli.Guard(console, async (parse, cancellationToken) =>
        {
            using var client = globals.CreateClient(parse, console);
            var sandboxes = await client.ListAsync(new SandboxListFilter { State = parse.GetValue(state), Metadata = KeyValues.ToDictionary(parse.GetValue(metadata)) }, cancellationToken);
            if (parse.GetValue(json))
            {
                await console.Out.WriteLineAsync(JsonSerializer.Serialize(sandboxes.ToList(), CliJsonContext.Default.ListSandboxDetail));
                return AirlockCli.ExitOk;
            }

            if (sandboxes.Count == 0)
            {
                await console.Error.WriteLineAsync("no sandboxes");
                return AirlockCli.ExitOk;
            }

            var table = new Table().AddColumns("ID", "Template", "State", "Boundary", "Started", "Ends", "Metadata");
            foreach (var s in sandboxes)
            {
                table.AddRow(
                    s.SandboxId,
                    Markup.Escape(s.TemplateId),
                    Markup.Escape(s.Health == "unresponsive" ? "unresponsive" : s.State),
                    Markup.Escape(s.Boundary is { } b ? $"{b.Boundary} ({b.Driver})" + (b.Downgrade is null ? "" : " downgraded") : "-"),
                    s.StartedAt.ToLocalTime().ToString("yyyy-MM-dd HH:mm:ss", CultureInfo.InvariantCulture),
                    s.EndAt.ToLocalTime().ToString("yyyy-MM-dd HH:mm:ss", CultureInfo.InvariantCulture),
                    Markup.Escape(s.Metadata is { Count: > 0 } m ? string.Join(", ", m.Select(kv => kv.Key + "=" + kv.Value)) : ""));
            }

            console.Ui.Write(table);
            return AirlockCli.ExitOk;
        }));
        return command;
    }

    private sealed class ExecOptions
    {
        private bool _withEnv;

        public Argument<string[]> Command { get; } = new("command")
        {
            Description = "Command line, run with /bin/bash -l -c. One argument is passed as is; several are shell-quoted and joined.",
            Arity = ArgumentArity.OneOrMore,
        };

        public Option<string?> Cwd { get; } = new("--cwd") { Description = "Working directory inside the sandbox" };
        public Option<string?> User { get; } = new("--user") { Description = "User to run as (default: user; root is not available in the process boundary)" };
        public Option<string[]> Env { get; } = KeyValues.Option("--env", "Environment variable for this command (repeatable)");

        /// <param name="command">The command to add the options to.</param>
        /// <param name="withEnv">Whether to add <c>--env</c> (<c>run</c> already has the sandbox-wide one).</param>
        public void AddTo(Command command, bool withEnv)
        {
            command.Add(Cwd);
            command.Add(User);
            _withEnv = withEnv;
            if (withEnv)
            {
                command.Add(Env);
            }

            command.Add(Command);
        }

        public RunOptions Read(ParseResult parse) => new()
        {
            Cwd = parse.GetValue(Cwd),
            User = parse.GetValue(User),
            Envs = _withEnv ? KeyValues.ToDictionary(parse.GetValue(Env)) : null,
        };
    }

    private static Command Exec(CliConsole console, GlobalOptions globals)
    {
        var id = new Argument<string>("id") { Description = "Sandbox id" };
        var exec = new ExecOptions();
        var command = new Command("exec", "Run a command in a sandbox, streaming its output; exits with the command's exit code") { id };
        exec.AddTo(command, withEnv: true);
        command.SetAction(AirlockCli.Guard(console, async (parse, cancellationToken) =>
        {
            using var client = globals.CreateClient(parse, console);
            var sandbox = await client.ConnectAsync(parse.GetValue(id)!, cancellationToken);
            sandbox.Detach();
            return await StreamAsync(console, sandbox, JoinCommand(parse.GetValue(exec.Command)!), exec.Read(parse), cancellationToken);
        }));
        return command;
    }

    private static Command Run(CliConsole console, GlobalOptions globals)
    {
        var create = new CreateOptions();
        var exec = new ExecOptions();
        var command = new Command("run", "Create a sandbox, run one command in it, kill it; exits with the command's exit code");
        create.AddTo(command);
        exec.AddTo(command, withEnv: false);
        command.SetAction(AirlockCli.Guard(console, async (parse, cancellationToken) =>
        {
            using var client = globals.CreateClient(parse, console);
            var line = JoinCommand(parse.GetValue(exec.Command)!);
            var sandbox = await client.CreateSandboxAsync(create.Read(parse), cancellationToken);
            await using (sandbox)
            {
                if (sandbox.Boundary?.Downgrade is { } downgrade)
                {
                    console.WriteWarning("downgraded: " + downgrade);
                }

                return await StreamAsync(console, sandbox, line, exec.Read(parse), cancellationToken);
            }
        }));
        return command;
    }

    private static Command Copy(CliConsole console, GlobalOptions globals)
    {
        var source = new Argument<string>("source") { Description = "Local path, or <id>:<path> in a sandbox" };
        var destination = new Argument<string>("destination") { Description = "Local path, or <id>:<path> in a sandbox" };
        var json = new Option<bool>("--json") { Description = "Print what was copied as JSON" };
        var command = new Command("cp", "Copy one file into or out of a sandbox (exactly one side is <id>:<path>)") { source, destination, json };
        command.SetAction(AirlockCli.Guard(console, async (parse, cancellationToken) =>
        {
            var plan = CopyPlan.Parse(parse.GetValue(source)!, parse.GetValue(destination)!);
            using var client = globals.CreateClient(parse, console);
            var sandbox = await client.ConnectAsync(plan.SandboxId, cancellationToken);
            sandbox.Detach();
            var result = plan.Upload
                ? await UploadAsync(sandbox, plan, cancellationToken)
                : await DownloadAsync(sandbox, plan, cancellationToken);
            if (parse.GetValue(json))
            {
                await console.Out.WriteLineAsync(JsonSerializer.Serialize(result, CliJsonContext.Default.CopyOutput));
            }
            else
            {
                await console.Error.WriteLineAsync(string.Create(CultureInfo.InvariantCulture, $"copied {result.Bytes} bytes: {result.Source} -> {result.Destination}"));
            }

            return AirlockCli.ExitOk;
        }));
        return command;
    }

    private static Command Pause(CliConsole console, GlobalOptions globals)
    {
        var id = new Argument<string>("id") { Description = "Sandbox id" };
        var toDisk = new Option<bool>("--to-disk") { Description = "keep only the files and free the memory (processes are stopped; a microvm boots from its disk on resume); default keeps memory where the boundary can" };
        var command = new Command("pause", "Pause a sandbox: a microvm goes to disk with memory, processes and files; a container is frozen in place; a process sandbox keeps its files; --to-disk keeps only files in any boundary") { id, toDisk };
        command.SetAction(AirlockCli.Guard(console, async (parse, cancellationToken) =>
        {
            using var client = globals.CreateClient(parse, console);
            var sandboxId = parse.GetValue(id)!;
            await client.PauseAsync(sandboxId, parse.GetValue(toDisk), cancellationToken);
            await console.Error.WriteLineAsync($"paused {sandboxId}");
            return AirlockCli.ExitOk;
        }));
        return command;
    }

    private static Command Resume(CliConsole console, GlobalOptions globals)
    {
        var id = new Argument<string>("id") { Description = "Sandbox id" };
        var timeout = new Option<int?>("--timeout") { Description = "Seconds until the resumed sandbox times out (server default 300)" };
        var command = new Command("resume", "Resume a paused sandbox (a running one is left as it is)") { id, timeout };
        command.SetAction(AirlockCli.Guard(console, async (parse, cancellationToken) =>
        {
            using var client = globals.CreateClient(parse, console);
            var sandboxId = parse.GetValue(id)!;
            var resumed = await client.ResumeAsync(sandboxId, parse.GetValue(timeout), cancellationToken);
            await console.Error.WriteLineAsync(resumed ? $"resumed {sandboxId}" : $"{sandboxId} was already running");
            return AirlockCli.ExitOk;
        }));
        return command;
    }

    private static Command Kill(CliConsole console, GlobalOptions globals) =>
        AirlockCli.OnId(console, globals, "kill", "Kill a sandbox", "Sandbox id", (client, id, ct) => client.KillAsync(id, ct), "killed");

    /// <summary>Streams a command's output to stdout/stderr as it comes and returns its exit code.</summary>
    private static async Task<int> StreamAsync(CliConsole console, Sandbox sandbox, string line, RunOptions options, CancellationToken cancellationToken)
    {
        await foreach (var output in sandbox.RunAsync(line, options, cancellationToken))
        {
            switch (output)
            {
                case CommandStdout o:
                    await console.Out.WriteAsync(o.Text);
                    await console.Out.FlushAsync(cancellationToken);
                    break;
                case CommandStderr e:
                    await console.Error.WriteAsync(e.Text);
                    await console.Error.FlushAsync(cancellationToken);
                    break;
                case CommandExit x:
                    if (x.Error is { Length: > 0 } error)
                    {
                        console.WriteError(error);
                    }

                    return ExitCodeOf(x);
            }
        }

        throw new AirlockApiException(System.Net.HttpStatusCode.BadGateway, "stream_ended", "the command's output ended without an exit status.");
    }

    /// <summary>The process exit code for a sandbox command's exit: its own code when it has one (0-255), else 1 (or 128+signal when known).</summary>
    internal static int ExitCodeOf(CommandExit exit)
    {
        if (exit.ExitCode is >= 0 and <= 255)
        {
            return exit.ExitCode;
        }

        var signal = SignalStatus().Match(exit.Status ?? "");
        return signal.Success ? 128 + SignalNumber(signal.Groups[1].Value) : AirlockCli.ExitError;
    }

    /// <summary>One argument is a shell command line and goes as is; several are quoted so each stays one word.</summary>
    internal static string JoinCommand(IReadOnlyList<string> tokens)
    {
        if (tokens.Count == 0)
        {
            throw new CliUsageException("no command given.");
        }

        return tokens.Count == 1 ? tokens[0] : string.Join(' ', tokens.Select(ShellQuote));
    }

    internal static string ShellQuote(string word)
    {
        if (word.Length > 0 && SafeWord().IsMatch(word))
        {
            return word;
        }

        return "'" + word.Replace("'", "'\\''", StringComparison.Ordinal) + "'";
    }

    private static async Task<CopyOutput> UploadAsync(Sandbox sandbox, CopyPlan plan, CancellationToken cancellationToken)
    {
        if (Directory.Exists(plan.LocalPath))
        {
            throw new CliUsageException($"{plan.LocalPath} is a directory; cp copies one file.");
        }

        if (!File.Exists(plan.LocalPath))
        {
            throw new CliUsageException($"{plan.LocalPath}: no such file.");
        }

        var remote = plan.RemotePath.EndsWith('/') ? plan.RemotePath + Path.GetFileName(plan.LocalPath) : plan.RemotePath;
        var file = new FileStream(plan.LocalPath, FileMode.Open, FileAccess.Read, FileShare.Read, 81920, useAsync: true);
        await using (file)
        {
            var length = file.Length;
            await sandbox.Files.WriteAsync(remote, file, cancellationToken);
            return new CopyOutput("upload", sandbox.Id, plan.LocalPath, sandbox.Id + ":" + remote, length);
        }
    }

    private static async Task<CopyOutput> DownloadAsync(Sandbox sandbox, CopyPlan plan, CancellationToken cancellationToken)
    {
        var local = Directory.Exists(plan.LocalPath) || plan.LocalPath.EndsWith('/')
            ? Path.Combine(plan.LocalPath, RemoteFileName(plan.RemotePath))
            : plan.LocalPath;
        // Open the remote side first so a missing file leaves nothing behind locally.
        var remote = await sandbox.Files.OpenReadAsync(plan.RemotePath, cancellationToken);
        await using (remote)
        {
            var partial = local + ".airlock-partial";
            long bytes;
            var file = new FileStream(partial, FileMode.Create, FileAccess.Write, FileShare.None, 81920, useAsync: true);
            try
            {
                await using (file)
                {
                    await remote.CopyToAsync(file, cancellationToken);
                    bytes = file.Length;
                }

                File.Move(partial, local, overwrite: true);
            }
            catch
            {
                File.Delete(partial);
                throw;
            }

            return new CopyOutput("download", sandbox.Id, sandbox.Id + ":" + plan.RemotePath, local, bytes);
        }
    }

    private static string RemoteFileName(string remotePath)
    {
        var name = remotePath.TrimEnd('/');
        name = name[(name.LastIndexOf('/') + 1)..];
        return name.Length == 0 ? throw new CliUsageException($"{remotePath} names no file.") : name;
    }

    private static int SignalNumber(string name) => name.ToLowerInvariant() switch
    {
        "hangup" => 1,
        "interrupt" => 2,
        "quit" => 3,
        "aborted" => 6,
        "killed" => 9,
        "segmentation fault" => 11,
        "broken pipe" => 13,
        "terminated" => 15,
        _ => int.TryParse(name, NumberStyles.None, CultureInfo.InvariantCulture, out var n) && n is > 0 and < 128 ? n : 0,
    };

    [GeneratedRegex(@"^[A-Za-z0-9_./=:,@%+-]+$")]
    private static partial Regex SafeWord();

    [GeneratedRegex(@"^signal:\s*(.+)$", RegexOptions.IgnoreCase)]
    private static partial Regex SignalStatus();
}

/// <summary>Which way <c>sandbox cp</c> copies: exactly one side is <c>&lt;id&gt;:&lt;path&gt;</c>.</summary>
internal sealed partial record CopyPlan(bool Upload, string SandboxId, string RemotePath, string LocalPath)
{
    public static CopyPlan Parse(string source, string destination)
    {
        var src = Remote().Match(source);
        var dst = Remote().Match(destination);
        if (src.Success == dst.Success)
        {
            throw new CliUsageException(src.Success
                ? "both sides are in a sandbox; copy through a local file."
                : "neither side names a sandbox; write one side as <sandbox-id>:<path> (e.g. abc...xyz:/home/user/file).");
        }

        var remote = src.Success ? src : dst;
        var local = src.Success ? destination : source;
        if (string.IsNullOrWhiteSpace(local))
        {
            throw new CliUsageException("the local path is empty.");
        }

        return new CopyPlan(Upload: dst.Success, remote.Groups[1].Value, remote.Groups[2].Value, local);
    }

    [GeneratedRegex("^([a-z0-9]{20}):(.+)$")]
    private static partial Regex Remote();
}
