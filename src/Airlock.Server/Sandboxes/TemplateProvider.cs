using Airlock.Sandboxes;
using Airlock.Templates;

namespace Airlock.Server.Sandboxes;

/// <summary>Resolves template ids to root filesystems, building the base template on first use.</summary>
internal sealed class TemplateProvider(TemplateCatalog catalog, BaseTemplateBuilder builder) : ITemplateSource
{
    public bool IsKnown(string templateId, out IReadOnlyCollection<string> known)
    {
        known = catalog.Known.ToList();
        return catalog.TryResolve(templateId, out _);
    }

    public async Task<string> GetRootFsAsync(string templateId, CancellationToken cancellationToken)
    {
        if (!catalog.TryResolve(templateId, out _))
        {
            throw SandboxException.NotFound("template_not_found", $"Template '{templateId}' not found. Known templates: {string.Join(", ", catalog.Known)}.");
        }

        return await builder.EnsureBuiltAsync(progress: null, cancellationToken);
    }
}
