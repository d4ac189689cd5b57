using Airlock.Envd;
using Airlock.Envd.Connect;
using Airlock.Guest;
using Microsoft.AspNetCore.Server.Kestrel.Core;

// airlock-guest: the agent inside every sandbox. It speaks envd's protocol so E2B's SDKs work unchanged, and it
// answers only requests carrying the sandbox's access token (airlockd checks it too; this is the second lock).
// The same binary is the exec shim that confines a command (seccomp, command cgroup) before it runs.
if (ConfinementShim.IsInvocation(args))
{
    return ConfinementShim.Run(args);
}

AgentOptions options;
try
{
    options = AgentOptions.Parse(args);
}
catch (ArgumentException e)
{
    await Console.Error.WriteLineAsync($"airlock-guest: {e.Message}");
    return 2;
}

// Not dumpable: commands run as the agent's own uid, and this keeps them from reading its memory and its
// /proc/<pid>/environ, where the access token was passed in. (PR_SET_DUMPABLE = 4)
NativeMethods.prctl(4, 0, 0, 0, 0);

// Out of the OOM killer's reach where the agent may say so (root in a microVM): a fork or memory bomb in the sandbox
// then loses its own processes, not the agent that reports on it. Commands get the default back (Processes).
OomProtection.TryProtect();

// Content root: the agent's own directory, not the working directory. The host watches its content root for
// configuration changes, and a recursive inotify watch of "/" (a container's or VM's cwd) walks the whole filesystem:
// seen as ~300 ms of startup in a container.
var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { ContentRootPath = AppContext.BaseDirectory });
builder.Logging.ClearProviders();
builder.Logging.AddSimpleConsole(o => o.SingleLine = true);
builder.Logging.AddFilter("Microsoft.AspNetCore", LogLevel.Warning);
builder.WebHost.ConfigureKestrel(kestrel =>
{
    kestrel.AddServerHeader = false;
    // Connections are cheap for Kestrel but each is a descriptor the agent shares with the commands it starts: a
    // client that opens connections without end is refused past this many instead of starving process starts. Stalled
    // clients are already bounded by Kestrel's defaults: request headers within 30 s, bodies and responses at least
    // 240 bytes/s after a 5 s grace (a download nobody reads is aborted), idle keep-alives closed after 130 s.
    kestrel.Limits.MaxConcurrentConnections = 1024;
    kestrel.Listen(options.Listen, listen => listen.Protocols = HttpProtocols.Http1);
});
builder.Services.AddSingleton(options);
builder.Services.AddSingleton<AgentState>();
builder.Services.AddSingleton<AgentService>();
builder.Services.AddSingleton<Users>();
builder.Services.AddSingleton<Entries>();
builder.Services.AddSingleton<ProcessTable>();
builder.Services.AddSingleton<ProcessService>();
builder.Services.AddSingleton<FilesystemService>();
builder.Services.AddSingleton<FileTransfer>();
builder.Services.AddSingleton<WatchService>();
builder.Services.AddSingleton(TimeProvider.System);
builder.Services.AddSingleton<SystemMetrics>();
builder.Services.AddHostedService(services => services.GetRequiredService<SystemMetrics>());

var app = builder.Build();
var state = app.Services.GetRequiredService<AgentState>();
var clock = app.Services.GetRequiredService<TimeProvider>();
app.Use(async (context, next) =>
{
    if (context.Request.Path == "/health")
    {
        await next(context);
        return;
    }

    // /files also takes URLs signed with the token (E2B's uploadUrl/downloadUrl), as envd does.
    if (SignedFileUrls.IsFileRoute(context.Request))
    {
        if (SignedFileUrls.Check(context, state, clock) is { } refusal)
        {
            await FileTransfer.WriteErrorBodyAsync(context, refusal.Status, refusal.Message);
            return;
        }

        await next(context);
        return;
    }

    if (!state.Accepts(context.Request.Headers[EnvdProtocol.AccessTokenHeader].ToString()))
    {
        await ConnectRpc.WriteErrorAsync(context, new ConnectException(ConnectCodes.Unauthenticated, $"missing or wrong {EnvdProtocol.AccessTokenHeader}"));
        return;
    }

    await next(context);
});

app.MapGet("/health", context =>
{
    context.Response.StatusCode = StatusCodes.Status204NoContent;
    return Task.CompletedTask;
});
var processes = app.Services.GetRequiredService<ProcessService>();
var filesystem = app.Services.GetRequiredService<FilesystemService>();
var files = app.Services.GetRequiredService<FileTransfer>();
app.MapPost("/" + EnvdProtocol.ProcessService + "/{method}", processes.HandleAsync);
var watches = app.Services.GetRequiredService<WatchService>();
app.MapPost("/" + EnvdProtocol.FilesystemService + "/{method}", context =>
    WatchService.Handles(context) ? watches.HandleAsync(context) : filesystem.HandleAsync(context));
app.MapPost("/" + EnvdProtocol.AgentService + "/{method}", app.Services.GetRequiredService<AgentService>().HandleAsync);
app.MapGet("/files", files.DownloadAsync);
app.MapPost("/files", files.UploadAsync);
app.MapGet("/metrics", app.Services.GetRequiredService<SystemMetrics>().HandleAsync);
app.MapFallback(context => ConnectRpc.WriteErrorAsync(context, new ConnectException(ConnectCodes.NotFound, $"no route {context.Request.Method} {context.Request.Path}")));

await app.RunAsync();
return 0;
