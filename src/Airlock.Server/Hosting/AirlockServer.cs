using Airlock.Audit;
using Airlock.Core.Api;
using Airlock.Core.Auditing;
using Airlock.Core.Drivers;
using Airlock.Core.Sandboxes;
using Airlock.Core.Storage;
using Airlock.Server.Api;
using Airlock.Server.Auth;
using Airlock.Server.Envd;
using Airlock.Sandboxes;
using Airlock.Sandboxes.Agent;
using Airlock.Sandboxes.Live;
using Airlock.Server.Sandboxes;
using Airlock.Storage;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Airlock.Server;

/// <summary>airlockd: composition root.</summary>
public static class AirlockServer
{
    /// <summary>Runs airlockd until <paramref name="cancellationToken"/> fires or the host is asked to stop.</summary>
    public static async Task<int> RunAsync(AirlockServerOptions options, Action<string>? onBootstrapKey, CancellationToken cancellationToken)
    {
        var app = await BuildAsync(options, onBootstrapKey, configureServices: null, cancellationToken);
        await using (app)
        {
            await app.RunAsync(cancellationToken);
        }

        return 0;
    }

    /// <summary>What each boundary can offer on this host, and why not.</summary>
    public static async Task<IReadOnlyList<DriverAvailability>> DoctorAsync(AirlockServerOptions options, CancellationToken cancellationToken)
    {
        var results = new List<DriverAvailability>();
        var network = NewNetworkManager(options, Microsoft.Extensions.Logging.Abstractions.NullLogger<Airlock.Networking.NetnsNetworkManager>.Instance);
        foreach (var driver in CreateDrivers(options, network, Microsoft.Extensions.Logging.Abstractions.NullLoggerFactory.Instance))
        {
            results.Add(await driver.ProbeAsync(cancellationToken));
        }

        var missingNet = await Airlock.Networking.NetnsNetworkManager.ProbeAsync(cancellationToken);
        results.Add(new DriverAvailability(BoundaryKind.Process, "netns+nftables", missingNet.Count == 0,
            missingNet.Count == 0 ? "per-sandbox network namespaces with default-deny nftables" : string.Join("; ", missingNet)) { Missing = missingNet });
        return results;
    }

    /// <summary>Builds (but does not start) airlockd; tests use this to host it in-process.</summary>
    public static async Task<WebApplication> BuildAsync(
        AirlockServerOptions options,
        Action<string>? onBootstrapKey,
        Action<IServiceCollection>? configureServices,
        CancellationToken cancellationToken)
    {
        var validation = new AirlockServerOptionsValidator().Validate(null, options);
        if (validation.Failed)
        {
            throw new OptionsValidationException(nameof(AirlockServerOptions), typeof(AirlockServerOptions), validation.Failures);
        }

        if (OperatingSystem.IsWindows())
        {
            throw new PlatformNotSupportedException("airlockd runs on Linux");
        }

        // Owner-only, except that others may pass through (not list): sandbox uids open their overlay root by path.
        Directory.CreateDirectory(options.DataDir);
        File.SetUnixFileMode(options.DataDir, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.OtherExecute);

        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls(options.Listen);
        builder.WebHost.ConfigureKestrel(k => k.Limits.MaxRequestBodySize = options.MaxUploadBytes);
        ServerLogging.Configure(builder.Logging, options);
        builder.Services.Configure<HostOptions>(h => h.ShutdownTimeout = TimeSpan.FromSeconds(30));

        var services = builder.Services;
        services.AddSingleton(options);
        services.AddSingleton(TimeProvider.System);
        configureServices?.Invoke(services);

        var time = services.BuildServiceProvider().GetRequiredService<TimeProvider>();
        var store = await SqliteStore.OpenAsync(options.DataDir, time, cancellationToken);
        await store.MigrateAsync(cancellationToken);
        services.AddSingleton<IStore>(_ => store); // factory registration: the container disposes it on shutdown
        services.AddSingleton<AuditChain>(sp => new AuditChain(sp.GetRequiredService<IStore>(), sp.GetRequiredService<TimeProvider>()));
        services.AddSingleton<IAuditLog>(sp => new CallerAuditLog(sp.GetRequiredService<AuditChain>()));
        services.AddSingleton<INetworkManager>(sp => NewNetworkManager(options, sp.GetRequiredService<ILogger<Airlock.Networking.NetnsNetworkManager>>()));
        services.AddSingleton<IEnumerable<ISandboxDriver>>(sp => CreateDrivers(options, sp.GetRequiredService<INetworkManager>(), sp.GetRequiredService<ILoggerFactory>()).ToList());
        var templatesDir = options.TemplatesDir ?? Environment.GetEnvironmentVariable("AIRLOCK_TEMPLATES_DIR") ?? Path.Combine(options.DataDir, "templates");
        services.AddSingleton(new Airlock.Templates.TemplateCatalog());
        services.AddSingleton(sp => new Airlock.Templates.BaseTemplateBuilder(templatesDir, sp.GetRequiredService<ILogger<Airlock.Templates.BaseTemplateBuilder>>()));
        services.AddSingleton<TemplateProvider>();
        services.AddSingleton<ITemplateSource>(sp => sp.GetRequiredService<TemplateProvider>());
        services.AddSingleton<SandboxConnector>();
        services.AddSingleton<ActivityTracker>();
        services.AddSingleton(sp => new SandboxLifecycle(
            sp.GetRequiredService<IStore>(),
            sp.GetRequiredService<IAuditLog>(),
            sp.GetRequiredService<IEnumerable<ISandboxDriver>>(),
            sp.GetRequiredService<INetworkManager>(),
            sp.GetRequiredService<SandboxConnector>(),
            sp.GetRequiredService<ITemplateSource>(),
            sp.GetRequiredService<ActivityTracker>(),
            sp.GetRequiredService<TimeProvider>(),
            options.ToSandboxOptions(),
            GuestAgentLocator.Find(options.GuestAgentPath),
            sp.GetRequiredService<ILoggerFactory>()));
        services.AddSingleton<EnvdGateway>();
        services.AddSingleton<ApiKeyAuthenticator>();
        AdminApi.AddServices(services);
        services.AddHostedService<SandboxLifecycleService>();
        services.AddHttpForwarder();
        services.AddOpenApi("v1", o => o.AddDocumentTransformer((doc, _, _) =>
        {
            doc.Info = new() { Title = "Airlock API", Version = "v1", Description = "E2B-shaped control API of airlockd. Authenticate with X-API-Key." };

            // The document describes the API, not one deployment: no server URL (clients use their own base URL).
            doc.Servers?.Clear();
            return Task.CompletedTask;
        }));
        services.ConfigureHttpJsonOptions(j => j.SerializerOptions.TypeInfoResolverChain.Insert(0, ApiJsonContext.Default));

        var app = builder.Build();
        await BootstrapAsync(app.Services, options, onBootstrapKey, cancellationToken);
        await AdminApi.LoadQuotasAsync(app.Services, cancellationToken);

        app.Use(ServerLogging.LogRequestsAsync);
        app.Use(HandleErrorsAsync);
        app.Use(RouteEnvdAsync);
        app.Use(AuthenticationStep.ControlAsync);
        app.MapOpenApi("/openapi/{documentName}.json");
        ControlApi.Map(app);
        AdminApi.Map(app);
        return app;
    }

    private static Airlock.Networking.NetnsNetworkManager NewNetworkManager(AirlockServerOptions options, ILogger<Airlock.Networking.NetnsNetworkManager> logger) =>
        new(new Airlock.Networking.NetworkOptions { StateDir = Path.Combine(options.DataDir, "network") }, logger);

    private static IEnumerable<ISandboxDriver> CreateDrivers(AirlockServerOptions options, INetworkManager network, ILoggerFactory loggers) =>
        AllDrivers(options, network, loggers).Select(driver => options.DisabledBoundaries.Contains(driver.Boundary)
            ? new Airlock.Boundaries.UnavailableDriver(driver.Boundary, driver.Name, $"the {driver.Boundary.Name()} boundary is disabled on this node by its operator", ["enable it in airlockd's configuration (DisabledBoundaries)"])
            : driver);

    private static IEnumerable<ISandboxDriver> AllDrivers(AirlockServerOptions options, INetworkManager network, ILoggerFactory loggers)
    {
        yield return new Airlock.Boundaries.MicroVm.QemuDriver(
            new Airlock.Boundaries.MicroVm.QemuOptions
            {
                DataDir = options.DataDir,
                Accelerator = options.Accelerator,
                Snapshots = options.MicroVmSnapshots,
                CacheDir = options.VmCacheDir ?? Environment.GetEnvironmentVariable("AIRLOCK_VM_CACHE_DIR"),
            },
            network,
            loggers.CreateLogger<Airlock.Boundaries.MicroVm.QemuDriver>());
        yield return new Airlock.Boundaries.Process.BubblewrapDriver(new Airlock.Boundaries.Process.BubblewrapOptions { DataDir = options.DataDir }, loggers.CreateLogger<Airlock.Boundaries.Process.BubblewrapDriver>());
        yield return new Airlock.Boundaries.Container.RuncDriver(new Airlock.Boundaries.Container.RuncOptions { DataDir = options.DataDir, Runtime = options.ContainerRuntime }, loggers.CreateLogger<Airlock.Boundaries.Container.RuncDriver>());
    }

    private static async Task BootstrapAsync(IServiceProvider services, AirlockServerOptions options, Action<string>? onBootstrapKey, CancellationToken cancellationToken)
    {
        var store = services.GetRequiredService<IStore>();
        if ((await store.ListTenantsAsync(cancellationToken)).Count > 0)
        {
            return;
        }

        var time = services.GetRequiredService<TimeProvider>();
        var tenant = await store.CreateTenantAsync("default", cancellationToken);
        var key = ApiKeys.NewApiKey();
        var keyId = ApiKeys.NewId();
        await store.AddApiKeyAsync(new ApiKeyRecord(keyId, tenant.TenantId, ApiKeys.Hash(key), "bootstrap", time.GetUtcNow()) { Scope = ApiKeyScope.Admin }, cancellationToken);
        if (OperatingSystem.IsWindows())
        {
            throw new PlatformNotSupportedException("airlockd runs on Linux");
        }

        var path = Path.Combine(options.DataDir, "bootstrap-key");
        await using (var file = new FileStream(path, new FileStreamOptions { Mode = FileMode.Create, Access = FileAccess.Write, UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite }))
        await using (var writer = new StreamWriter(file))
        {
            await writer.WriteLineAsync(key.AsMemory(), cancellationToken);
        }

        File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        await services.GetRequiredService<IAuditLog>().AppendAsync(
            new AuditEntry(AuditKinds.ApiKeyCreated, tenant.TenantId, null, AuditJson.Object(("keyId", keyId), ("tenantId", tenant.TenantId), ("name", "bootstrap"), ("scope", "admin"))), cancellationToken);
        ServerLog.BootstrapKey(services.GetRequiredService<ILoggerFactory>().CreateLogger("Airlock.Server"), path);
        onBootstrapKey?.Invoke(key);
    }

    private static async Task HandleErrorsAsync(HttpContext context, Func<Task> next)
    {
        try
        {
            await next();

            // Routing answers some mismatches (wrong method, wrong content type, no route) with a bare status code;
            // every error from airlockd carries {code, message}.
            var status = context.Response.StatusCode;
            if (status >= 400 && !context.Response.HasStarted && string.IsNullOrEmpty(context.Response.ContentType))
            {
                var (code, message) = status switch
                {
                    415 => ("unsupported_media_type", $"Content type '{context.Request.ContentType}' is not accepted here; send application/json."),
                    405 => ("method_not_allowed", $"{context.Request.Method} is not allowed on {context.Request.Path}."),
                    404 => ("not_found", $"No route for {context.Request.Method} {context.Request.Path}."),
                    _ => ("error", $"HTTP {status}."),
                };
                await ApiProblem.WriteAsync(context, status, code, message);
            }
        }
        catch (ApiProblem problem) when (!context.Response.HasStarted)
        {
            await ApiProblem.WriteAsync(context, problem.Status, problem.ErrorCode, problem.Message);
        }
        catch (Airlock.Sandboxes.SandboxException error) when (!context.Response.HasStarted)
        {
            // The lifecycle's domain errors become HTTP here, at the edge, and nowhere else.
            await ApiProblem.WriteAsync(context, ApiProblem.StatusOf(error.Kind), error.Code, error.Message);
        }
        catch (BadHttpRequestException ex) when (!context.Response.HasStarted)
        {
            await ApiProblem.WriteAsync(context, ex.StatusCode, ex.StatusCode == 413 ? "body_too_large" : "bad_request", ex.Message);
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
        {
            // client went away
        }
        catch (Exception ex) when (!context.Response.HasStarted)
        {
            ServerLog.Unexpected(context.RequestServices.GetRequiredService<ILoggerFactory>().CreateLogger("Airlock.Server"), ex, context.Request.Path);
            await ApiProblem.WriteAsync(context, 500, "internal_error", "Internal error; see airlockd's log.");
        }
    }

    private static async Task RouteEnvdAsync(HttpContext context, Func<Task> next)
    {
        var options = context.RequestServices.GetRequiredService<AirlockServerOptions>();
        if (EnvdGateway.TryMatch(context.Request, options.Domain, out var sandboxId, out var port))
        {
            context.Items[ServerLogging.EnvdItem] = true;
            if (await AuthenticationStep.DeniedEnvdAsync(context))
            {
                return;
            }

            await context.RequestServices.GetRequiredService<EnvdGateway>().HandleAsync(context, sandboxId, port);
            return;
        }

        if (EnvdGateway.TryMatchSigned(context.Request, context.RequestServices.GetRequiredService<SandboxLifecycle>(), out var signer))
        {
            context.Items[ServerLogging.EnvdItem] = true;
            await context.RequestServices.GetRequiredService<EnvdGateway>().HandleAsync(context, signer, Airlock.Envd.EnvdProtocol.Port);
            return;
        }

        await next();
    }
}

/// <summary>Reconciles on start; kills or keeps sandboxes on stop.</summary>
internal sealed class SandboxLifecycleService(SandboxLifecycle manager) : IHostedService, IDisposable
{
    private readonly CancellationTokenSource _stopping = new();
    private Task _probes = Task.CompletedTask;

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        await manager.ReconcileAsync(cancellationToken);
        manager.StartBackground();

        // Probe every boundary once now (the microvm probe boots a kernel, KVM bounded) rather than on the first create;
        // a stop cancels them, so none writes into a data directory after airlockd is gone.
        _probes = Task.WhenAll(manager.Drivers.Values.Select(driver => ProbeQuietlyAsync(driver, _stopping.Token)));
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        await _stopping.CancelAsync();
        await manager.ShutdownAsync(cancellationToken);
        await _probes.WaitAsync(cancellationToken);
    }

    public void Dispose() => _stopping.Dispose();

    private static async Task ProbeQuietlyAsync(ISandboxDriver driver, CancellationToken cancellationToken)
    {
        try
        {
            await driver.ProbeAsync(cancellationToken);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // airlockd is stopping; the next create probes again.
        }
        catch (Exception) when (cancellationToken.IsCancellationRequested)
        {
            // A probe cut short by the stop may fail on its way out; it is only a warm-up, and a stop must not fail.
        }
    }
}
