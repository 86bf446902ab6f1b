'use strict';

// Stage-wide throttling for the REST API, in the CloudFormation template itself.
//
// The Serverless Framework (v3) writes the API's stage through an AWS::ApiGateway::Deployment whose
// logical id changes with every deploy, so serverless.yml cannot name it under `resources`; and it
// offers throttling only in usage plans, which hold back API-key callers alone. This plugin gives
// that Deployment a StageDescription with custom.stageThrottling's rateLimit (requests per second,
// steady) and burstLimit (requests at once): API Gateway then answers 429 (the THROTTLED gateway
// response in serverless.yml) to whatever exceeds them, before any Lambda runs or costs a cent.
//
// It also drops DependsOn entries that a Ref or GetAtt in the same resource already implies: the
// framework's own custom resource for API Gateway's CloudWatch role (made for the access logs) has
// one, and cfn-lint (tests/test_packaging.py) warns of it (W3005). The order of creation is unchanged.

class StageThrottling {
  constructor(serverless) {
    this.serverless = serverless;
    this.hooks = { 'before:package:finalize': () => this.apply() };
  }

  apply() {
    const service = this.serverless.service;
    const settings = (service.custom && service.custom.stageThrottling) || {};
    const rate = Number(settings.rateLimit);
    const burst = Number(settings.burstLimit);
    if (!(rate > 0) || !(burst > 0) || !Number.isInteger(burst)) {
      throw new this.serverless.classes.Error(
        `custom.stageThrottling needs a rateLimit > 0 and a whole burstLimit > 0 (got ${settings.rateLimit}, ` +
          `${settings.burstLimit}): set them with --param="throttleRate=N" --param="throttleBurst=N"`
      );
    }
    const resources = service.provider.compiledCloudFormationTemplate.Resources;
    const deployments = Object.values(resources).filter((r) => r.Type === 'AWS::ApiGateway::Deployment');
    for (const deployment of deployments) {
      deployment.Properties.StageDescription = {
        ...(deployment.Properties.StageDescription || {}),
        ThrottlingRateLimit: rate,
        ThrottlingBurstLimit: burst,
      };
    }
    for (const resource of Object.values(resources)) {
      if (!Array.isArray(resource.DependsOn)) continue;
      const referenced = new Set();
      collectReferences(resource.Properties, referenced);
      resource.DependsOn = resource.DependsOn.filter((name) => !referenced.has(name));
      if (!resource.DependsOn.length) delete resource.DependsOn;
    }
  }
}

function collectReferences(value, found) {
  if (Array.isArray(value)) {
    value.forEach((item) => collectReferences(item, found));
  } else if (value && typeof value === 'object') {
    for (const [key, inner] of Object.entries(value)) {
      if (key === 'Ref' && typeof inner === 'string') found.add(inner);
      else if (key === 'Fn::GetAtt') found.add(Array.isArray(inner) ? inner[0] : String(inner).split('.')[0]);
      else collectReferences(inner, found);
    }
  }
}

module.exports = StageThrottling;
