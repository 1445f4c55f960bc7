-- Argo CD health check for azml.dev resources (MlWorkspace, MlOnlineEndpoint, MlCompute, MlConnection): their status
-- follows kstatus (Ready, Reconciling, Stalled conditions with observedGeneration), which Argo CD does not read by
-- itself. Installed by deploy/argocd/argocd-cm.yaml; tested by the operator crate's unit tests (gitops_tests.rs) with
-- a Lua 5.1 interpreter, the dialect Argo CD's gopher-lua speaks.
local hs = {status = "Progressing", message = "Waiting for the operator to report"}
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
if obj.status.observedGeneration == nil or obj.status.observedGeneration ~= obj.metadata.generation then
  hs.message = "Waiting for the operator to observe the latest spec"
  return hs
end
local ready = nil
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Stalled" and c.status == "True" then
    return {status = "Degraded", message = c.reason .. ": " .. (c.message or "")}
  end
  if c.type == "Ready" then
    ready = c
  end
end
if ready ~= nil and ready.reason == "Paused" then
  return {status = "Suspended", message = ready.message or "paused"}
end
if ready ~= nil and ready.status == "True" then
  return {status = "Healthy", message = ready.message or ""}
end
if ready ~= nil then
  hs.message = ready.reason .. ": " .. (ready.message or "")
end
return hs
