// modelrepo on Azure: storage (uploads, registry, dead letters, metadata table), a Flex Consumption
// Python Function App with a user-assigned managed identity, Application Insights, the Event Grid
// system topic whose subscription feeds the blob trigger, and the Event Grid custom topic the app
// publishes its own events to (CloudEvents 1.0; subscribe to it with `az eventgrid event-subscription`).
//
// Deploy in two passes (the blob trigger's webhook key exists only once the code is published):
//   az deployment group create -g <rg> -f infra/main.bicep
//   func azure functionapp publish <functionAppName> --python
//   az deployment group create -g <rg> -f infra/main.bicep -p subscribeToUploads=true

@description('Region of every resource.')
param location string = resourceGroup().location

@description('Prefix of resource names.')
@minLength(3)
@maxLength(11)
param baseName string = 'modelrepo'

@description('Storage redundancy: zone-redundant, geo-replicated by default.')
@allowed(['Standard_ZRS', 'Standard_GZRS', 'Standard_RAGZRS'])
param storageSku string = 'Standard_GZRS'

@description('Most instances the Flex Consumption plan may scale out to.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Create the Event Grid subscription; set true after the code is published.')
param subscribeToUploads bool = false

@description('When the scheduled reconcile runs (NCRONTAB, six fields, UTC).')
param reconcileSchedule string = '0 */15 * * * *'

@description('When the event dispatcher sweeps every partition for events its hints missed (NCRONTAB, six fields, UTC).')
param eventsSweepSchedule string = '0 */5 * * * *'

@description('Object id of the operators (a group, usually) who run `modelrepo reconcile|dead-letters|replay --backend azure`; empty: no operator roles.')
param operatorPrincipalId string = ''

@description('What kind of principal operatorPrincipalId is.')
@allowed(['Group', 'User', 'ServicePrincipal'])
param operatorPrincipalType string = 'Group'

var suffix = uniqueString(resourceGroup().id, baseName)
var uploadsContainer = 'uploads'
var registryContainer = 'registry'
var deadLetterContainer = 'deadletter'
var packageContainer = 'app-package'
// The queue the blob trigger parks poison messages in (its name is fixed by the Functions host).
// Declared here so that it exists before the first failure, for monitoring and operator roles.
var poisonQueueName = 'webjobs-blobtrigger-poison'
var metadataTable = 'modelrepo'
// The functions' hints to the event dispatcher (one message per commit, naming the partition).
var eventsQueueName = 'modelrepo-events'
var functionAppName = '${baseName}-${suffix}'

// Built-in role definition ids (https://learn.microsoft.com/azure/role-based-access-control/built-in-roles).
var roles = {
  blobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  blobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  blobDataReader: '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1'
  queueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  tableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
  eventGridDataSender: 'd5a91429-5739-47e2-a06b-3470a27159e7'
}

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: 'log-${functionAppName}'
  location: location
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: 30
  }
}

resource insights 'Microsoft.Insights/components@2020-02-02' = {
  name: 'appi-${functionAppName}'
  location: location
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logs.id
    DisableLocalAuth: true
  }
}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-${functionAppName}'
  location: location
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: the Flex Consumption app (no VNet here) and Event Grid reach storage over its public endpoint; every request needs an Entra token (shared keys are off)
  // checkov:skip=CKV_AZURE_59: same reason; anonymous blob access stays off (allowBlobPublicAccess: false)
  // checkov:skip=CKV_AZURE_43: the name is 'st' + uniqueString() (13 lower-case letters and digits), which checkov cannot evaluate
  name: 'st${suffix}'
  location: location
  kind: 'StorageV2'
  sku: {
    name: storageSku
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
          keyType: 'Account'
        }
        file: {
          enabled: true
          keyType: 'Account'
        }
        queue: {
          enabled: true
          keyType: 'Account'
        }
        table: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource uploads 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: uploadsContainer
  properties: {
    publicAccess: 'None'
  }
}

resource containers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [
  for name in [registryContainer, packageContainer]: {
    parent: blobService
    name: name
    properties: {
      publicAccess: 'None'
    }
  }
]

resource deadLetters 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deadLetterContainer
  properties: {
    publicAccess: 'None'
  }
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource poisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: poisonQueueName
}

resource eventsQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: eventsQueueName
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource table 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: metadataTable
}

// Storage logs (reads, writes, deletes) of the blob, queue and table services go to the workspace.
resource blobDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: blobService
  properties: {
    workspaceId: logs.id
    logs: [
      {
        category: 'StorageRead'
        enabled: true
      }
      {
        category: 'StorageWrite'
        enabled: true
      }
      {
        category: 'StorageDelete'
        enabled: true
      }
    ]
  }
}

resource queueDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: queueService
  properties: {
    workspaceId: logs.id
    logs: [
      {
        category: 'StorageRead'
        enabled: true
      }
      {
        category: 'StorageWrite'
        enabled: true
      }
      {
        category: 'StorageDelete'
        enabled: true
      }
    ]
  }
}

resource tableDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: tableService
  properties: {
    workspaceId: logs.id
    logs: [
      {
        category: 'StorageRead'
        enabled: true
      }
      {
        category: 'StorageWrite'
        enabled: true
      }
      {
        category: 'StorageDelete'
        enabled: true
      }
    ]
  }
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: Flex Consumption zone redundancy is available only in some regions; it is a per-deployment choice
  name: 'plan-${functionAppName}'
  location: location
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222: the API (function keys) and Event Grid's webhook delivery to the blob trigger need a public endpoint
  // checkov:skip=CKV_AZURE_17: callers authenticate with function keys; demanding client certificates would also refuse Event Grid's deliveries
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales out on demand from zero; always-ready instances are an opt-in cost
  // checkov:skip=CKV_AZURE_213: Flex Consumption replaces unhealthy instances itself and has no App Service health-check probe; /api/health serves external monitors
  name: functionAppName
  location: location
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    publicNetworkAccess: 'Enabled'
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${packageContainer}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identity.id
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: 2048
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      appSettings: [
        // The host's own storage, through the managed identity: no account key anywhere.
        {
          name: 'AzureWebJobsStorage__accountName'
          value: storage.name
        }
        {
          name: 'AzureWebJobsStorage__credential'
          value: 'managedidentity'
        }
        {
          name: 'AzureWebJobsStorage__clientId'
          value: identity.properties.clientId
        }
        // The connection the blob trigger and modelrepo's SDK clients share.
        {
          name: 'ModelRepoStorage__blobServiceUri'
          value: storage.properties.primaryEndpoints.blob
        }
        {
          name: 'ModelRepoStorage__queueServiceUri'
          value: storage.properties.primaryEndpoints.queue
        }
        {
          name: 'ModelRepoStorage__tableServiceUri'
          value: storage.properties.primaryEndpoints.table
        }
        {
          name: 'ModelRepoStorage__credential'
          value: 'managedidentity'
        }
        {
          name: 'ModelRepoStorage__clientId'
          value: identity.properties.clientId
        }
        {
          name: 'MODELREPO_UPLOADS_CONTAINER'
          value: uploadsContainer
        }
        {
          name: 'MODELREPO_REGISTRY_CONTAINER'
          value: registryContainer
        }
        {
          name: 'MODELREPO_TABLE'
          value: metadataTable
        }
        {
          name: 'MODELREPO_DEADLETTER_CONTAINER'
          value: deadLetterContainer
        }
        {
          name: 'MODELREPO_RECONCILE_SCHEDULE'
          value: reconcileSchedule
        }
        // Events out: the topic the dispatcher publishes to (as the app's identity), its hint
        // queue and the schedule of its sweep.
        {
          name: 'MODELREPO_EVENT_TOPIC_ENDPOINT'
          value: eventsTopic.properties.endpoint
        }
        {
          name: 'MODELREPO_EVENTS_QUEUE'
          value: eventsQueueName
        }
        {
          name: 'MODELREPO_EVENTS_SWEEP_SCHEDULE'
          value: eventsSweepSchedule
        }
        {
          name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
          value: insights.properties.ConnectionString
        }
        {
          name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
          value: 'ClientId=${identity.properties.clientId};Authorization=AAD'
        }
      ]
    }
  }
  dependsOn: [
    uploads
    containers
    deadLetters
    poisonQueue
    eventsQueue
    table
  ]
}

// --- role assignments of the app's identity -------------------------------------------------
// Blob Data Owner and Queue Data Contributor on the account are what the Functions host needs for
// AzureWebJobsStorage and for an identity-based blob trigger (receipts, its internal and poison
// queues); the table role is scoped to the one table, telemetry to the one App Insights.

resource appBlobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, roles.blobDataOwner)
  scope: storage
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.blobDataOwner)
  }
}

resource appQueueContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, identity.id, roles.queueDataContributor)
  scope: storage
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.queueDataContributor)
  }
}

resource appTableContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(table.id, identity.id, roles.tableDataContributor)
  scope: table
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.tableDataContributor)
  }
}

// Publishing to the events topic, and nothing else of Event Grid (the topic takes no keys).
resource appEventSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(eventsTopic.id, identity.id, roles.eventGridDataSender)
  scope: eventsTopic
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.eventGridDataSender)
  }
}

resource appTelemetry 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(insights.id, identity.id, roles.monitoringMetricsPublisher)
  scope: insights
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
  }
}

// --- role assignments of the operators ------------------------------------------------------
// `modelrepo reconcile|dead-letters|replay --backend azure` runs as the operator's own Entra
// identity (DefaultAzureCredential) with the app's settings: it reads the uploads, writes the
// metadata table, and reads and removes dead letters. Each role is scoped to that one resource.

resource operatorUploadsReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId)) {
  name: guid(storage.id, operatorPrincipalId, uploadsContainer, roles.blobDataReader)
  scope: uploads
  properties: {
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.blobDataReader)
  }
}

resource operatorTable 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId)) {
  name: guid(table.id, operatorPrincipalId, roles.tableDataContributor)
  scope: table
  properties: {
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.tableDataContributor)
  }
}

resource operatorPoisonQueue 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId)) {
  name: guid(poisonQueue.id, operatorPrincipalId, roles.queueDataContributor)
  scope: poisonQueue
  properties: {
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.queueDataContributor)
  }
}

resource operatorDeadLetters 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(operatorPrincipalId)) {
  name: guid(deadLetters.id, operatorPrincipalId, roles.blobDataContributor)
  scope: deadLetters
  properties: {
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.blobDataContributor)
  }
}

// --- Event Grid ---------------------------------------------------------------------------------

resource uploadsTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: 'evgt-${functionAppName}'
  location: location
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    source: storage.id
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

// Event Grid writes undeliverable events into the dead-letter container, and nowhere else.
resource topicDeadLetterWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, uploadsTopic.id, deadLetterContainer, roles.blobDataContributor)
  scope: deadLetters
  properties: {
    principalId: uploadsTopic.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.blobDataContributor)
  }
}

module uploadsSubscription 'modules/uploads-subscription.bicep' = if (subscribeToUploads) {
  name: 'uploads-subscription'
  params: {
    systemTopicName: uploadsTopic.name
    functionAppName: functionApp.name
    functionName: 'record_upload'
    uploadsContainer: uploadsContainer
    storageAccountId: storage.id
    deadLetterContainer: deadLetterContainer
  }
  dependsOn: [
    topicDeadLetterWriter
  ]
}

// --- events out ---------------------------------------------------------------------------------
// The custom topic modelrepo publishes every change to: CloudEvents 1.0 in and out, Entra ID only
// (local auth off: no keys exist to leak), TLS 1.2. Consumers subscribe to it themselves.

resource eventsTopic 'Microsoft.EventGrid/topics@2025-02-15' = {
  // checkov:skip=CKV_AZURE_193: the Flex Consumption app (no VNet here) publishes over the public endpoint; every request needs an Entra token (local auth is off)
  name: 'evgt-events-${functionAppName}'
  location: location
  // Subscriptions deliver and dead-letter with the topic's own identity (granted on their
  // destinations by their owners), so no destination needs a key or a SAS either.
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    inputSchema: 'CloudEventSchemaV1_0'
    disableLocalAuth: true
    minimumTlsVersionAllowed: '1.2'
    publicNetworkAccess: 'Enabled'
    dataResidencyBoundary: 'WithinGeopair'
  }
}

output functionAppName string = functionApp.name
output apiBaseUrl string = 'https://${functionApp.properties.defaultHostName}/api'
output storageAccountName string = storage.name
output uploadsContainer string = uploadsContainer
output eventsTopicName string = eventsTopic.name
output eventsTopicEndpoint string = eventsTopic.properties.endpoint
