using Airlock.Server.Api;
using Airlock.Templates;

namespace Airlock.Server.Sandboxes;

/// <summary>Resolves template ids to root filesystems, building the base template on first use.</summary>
internal sealed class TemplateProvider(TemplateCatalog catalog, BaseTemplateBuilder builder)
{
    public void EnsureKnown(string templateId)
    {
        if (!catalog.TryResolve(templateId, out _))
        {
            throw ApiProblem.NotFound("template_not_found", $"Template '{templateId}' not found. Known templates: {string.Join(", ", catalog.Known)}.");
        }
    }

    public async Task<string> GetRootFsAsync(string templateId, CancellationToken cancellationToken)
    {
        EnsureKnown(templateId);
        return await builder.EnsureBuiltAsync(progress: null, cancellationToken);
    }
}
