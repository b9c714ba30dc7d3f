import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SubscriptionStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SUBSCRIPTION_STATUS_UNSPECIFIED: _ClassVar[SubscriptionStatus]
    SUBSCRIPTION_STATUS_PENDING: _ClassVar[SubscriptionStatus]
    SUBSCRIPTION_STATUS_APPROVED: _ClassVar[SubscriptionStatus]
    SUBSCRIPTION_STATUS_REJECTED: _ClassVar[SubscriptionStatus]
    SUBSCRIPTION_STATUS_REVOKED: _ClassVar[SubscriptionStatus]

class QuotaScope(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    QUOTA_SCOPE_UNSPECIFIED: _ClassVar[QuotaScope]
    QUOTA_SCOPE_KEY: _ClassVar[QuotaScope]
    QUOTA_SCOPE_CONSUMER: _ClassVar[QuotaScope]
    QUOTA_SCOPE_TENANT: _ClassVar[QuotaScope]
    QUOTA_SCOPE_ALIAS: _ClassVar[QuotaScope]
    QUOTA_SCOPE_DEPLOYMENT: _ClassVar[QuotaScope]
    QUOTA_SCOPE_GLOBAL: _ClassVar[QuotaScope]

class QuotaKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    QUOTA_KIND_UNSPECIFIED: _ClassVar[QuotaKind]
    QUOTA_KIND_REQUESTS: _ClassVar[QuotaKind]
    QUOTA_KIND_TOKENS: _ClassVar[QuotaKind]
    QUOTA_KIND_SPEND: _ClassVar[QuotaKind]
    QUOTA_KIND_CONCURRENCY: _ClassVar[QuotaKind]

class UsageBucket(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    USAGE_BUCKET_UNSPECIFIED: _ClassVar[UsageBucket]
    USAGE_BUCKET_MINUTE: _ClassVar[UsageBucket]
    USAGE_BUCKET_HOUR: _ClassVar[UsageBucket]
    USAGE_BUCKET_DAY: _ClassVar[UsageBucket]

class UsageGroupBy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    USAGE_GROUP_BY_UNSPECIFIED: _ClassVar[UsageGroupBy]
    USAGE_GROUP_BY_TENANT: _ClassVar[UsageGroupBy]
    USAGE_GROUP_BY_CONSUMER: _ClassVar[UsageGroupBy]
    USAGE_GROUP_BY_ALIAS: _ClassVar[UsageGroupBy]
    USAGE_GROUP_BY_PROVIDER: _ClassVar[UsageGroupBy]

class DeploymentState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEPLOYMENT_STATE_UNSPECIFIED: _ClassVar[DeploymentState]
    DEPLOYMENT_STATE_HEALTHY: _ClassVar[DeploymentState]
    DEPLOYMENT_STATE_EJECTED: _ClassVar[DeploymentState]
    DEPLOYMENT_STATE_HALF_OPEN: _ClassVar[DeploymentState]
SUBSCRIPTION_STATUS_UNSPECIFIED: SubscriptionStatus
SUBSCRIPTION_STATUS_PENDING: SubscriptionStatus
SUBSCRIPTION_STATUS_APPROVED: SubscriptionStatus
SUBSCRIPTION_STATUS_REJECTED: SubscriptionStatus
SUBSCRIPTION_STATUS_REVOKED: SubscriptionStatus
QUOTA_SCOPE_UNSPECIFIED: QuotaScope
QUOTA_SCOPE_KEY: QuotaScope
QUOTA_SCOPE_CONSUMER: QuotaScope
QUOTA_SCOPE_TENANT: QuotaScope
QUOTA_SCOPE_ALIAS: QuotaScope
QUOTA_SCOPE_DEPLOYMENT: QuotaScope
QUOTA_SCOPE_GLOBAL: QuotaScope
QUOTA_KIND_UNSPECIFIED: QuotaKind
QUOTA_KIND_REQUESTS: QuotaKind
QUOTA_KIND_TOKENS: QuotaKind
QUOTA_KIND_SPEND: QuotaKind
QUOTA_KIND_CONCURRENCY: QuotaKind
USAGE_BUCKET_UNSPECIFIED: UsageBucket
USAGE_BUCKET_MINUTE: UsageBucket
USAGE_BUCKET_HOUR: UsageBucket
USAGE_BUCKET_DAY: UsageBucket
USAGE_GROUP_BY_UNSPECIFIED: UsageGroupBy
USAGE_GROUP_BY_TENANT: UsageGroupBy
USAGE_GROUP_BY_CONSUMER: UsageGroupBy
USAGE_GROUP_BY_ALIAS: UsageGroupBy
USAGE_GROUP_BY_PROVIDER: UsageGroupBy
DEPLOYMENT_STATE_UNSPECIFIED: DeploymentState
DEPLOYMENT_STATE_HEALTHY: DeploymentState
DEPLOYMENT_STATE_EJECTED: DeploymentState
DEPLOYMENT_STATE_HALF_OPEN: DeploymentState

class Tenant(_message.Message):
    __slots__ = ("id", "name", "disabled", "create_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DISABLED_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    disabled: bool
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., disabled: _Optional[bool] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Consumer(_message.Message):
    __slots__ = ("id", "tenant_id", "name", "disabled", "create_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DISABLED_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    tenant_id: str
    name: str
    disabled: bool
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., name: _Optional[str] = ..., disabled: _Optional[bool] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Admin(_message.Message):
    __slots__ = ("id", "tenant_id", "name", "create_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    tenant_id: str
    name: str
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., name: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ApiKey(_message.Message):
    __slots__ = ("id", "name", "tenant_id", "consumer_id", "admin_id", "create_time", "expire_time", "revoke_time")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_ID_FIELD_NUMBER: _ClassVar[int]
    ADMIN_ID_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    REVOKE_TIME_FIELD_NUMBER: _ClassVar[int]
    id: str
    name: str
    tenant_id: str
    consumer_id: str
    admin_id: str
    create_time: _timestamp_pb2.Timestamp
    expire_time: _timestamp_pb2.Timestamp
    revoke_time: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., name: _Optional[str] = ..., tenant_id: _Optional[str] = ..., consumer_id: _Optional[str] = ..., admin_id: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revoke_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Service(_message.Message):
    __slots__ = ("tenant_id", "alias", "requires_approval", "create_time")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    REQUIRES_APPROVAL_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    alias: str
    requires_approval: bool
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, tenant_id: _Optional[str] = ..., alias: _Optional[str] = ..., requires_approval: _Optional[bool] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Subscription(_message.Message):
    __slots__ = ("id", "tenant_id", "consumer_id", "alias", "status", "request_time", "decided_by", "decide_time", "note")
    ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_ID_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_TIME_FIELD_NUMBER: _ClassVar[int]
    DECIDED_BY_FIELD_NUMBER: _ClassVar[int]
    DECIDE_TIME_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    id: str
    tenant_id: str
    consumer_id: str
    alias: str
    status: SubscriptionStatus
    request_time: _timestamp_pb2.Timestamp
    decided_by: str
    decide_time: _timestamp_pb2.Timestamp
    note: str
    def __init__(self, id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., consumer_id: _Optional[str] = ..., alias: _Optional[str] = ..., status: _Optional[_Union[SubscriptionStatus, str]] = ..., request_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., decided_by: _Optional[str] = ..., decide_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., note: _Optional[str] = ...) -> None: ...

class CreateTenantRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class CreateTenantResponse(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: Tenant
    def __init__(self, tenant: _Optional[_Union[Tenant, _Mapping]] = ...) -> None: ...

class GetTenantRequest(_message.Message):
    __slots__ = ("tenant_id",)
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    def __init__(self, tenant_id: _Optional[str] = ...) -> None: ...

class GetTenantResponse(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: Tenant
    def __init__(self, tenant: _Optional[_Union[Tenant, _Mapping]] = ...) -> None: ...

class ListTenantsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListTenantsResponse(_message.Message):
    __slots__ = ("tenants", "next_page_token")
    TENANTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tenants: _containers.RepeatedCompositeFieldContainer[Tenant]
    next_page_token: str
    def __init__(self, tenants: _Optional[_Iterable[_Union[Tenant, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateTenantRequest(_message.Message):
    __slots__ = ("tenant_id", "name", "disabled")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DISABLED_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    name: str
    disabled: bool
    def __init__(self, tenant_id: _Optional[str] = ..., name: _Optional[str] = ..., disabled: _Optional[bool] = ...) -> None: ...

class UpdateTenantResponse(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: Tenant
    def __init__(self, tenant: _Optional[_Union[Tenant, _Mapping]] = ...) -> None: ...

class CreateConsumerRequest(_message.Message):
    __slots__ = ("tenant_id", "name")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    name: str
    def __init__(self, tenant_id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class CreateConsumerResponse(_message.Message):
    __slots__ = ("consumer",)
    CONSUMER_FIELD_NUMBER: _ClassVar[int]
    consumer: Consumer
    def __init__(self, consumer: _Optional[_Union[Consumer, _Mapping]] = ...) -> None: ...

class GetConsumerRequest(_message.Message):
    __slots__ = ("consumer_id",)
    CONSUMER_ID_FIELD_NUMBER: _ClassVar[int]
    consumer_id: str
    def __init__(self, consumer_id: _Optional[str] = ...) -> None: ...

class GetConsumerResponse(_message.Message):
    __slots__ = ("consumer",)
    CONSUMER_FIELD_NUMBER: _ClassVar[int]
    consumer: Consumer
    def __init__(self, consumer: _Optional[_Union[Consumer, _Mapping]] = ...) -> None: ...

class ListConsumersRequest(_message.Message):
    __slots__ = ("tenant_id", "page_size", "page_token")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    page_size: int
    page_token: str
    def __init__(self, tenant_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListConsumersResponse(_message.Message):
    __slots__ = ("consumers", "next_page_token")
    CONSUMERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    consumers: _containers.RepeatedCompositeFieldContainer[Consumer]
    next_page_token: str
    def __init__(self, consumers: _Optional[_Iterable[_Union[Consumer, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateConsumerRequest(_message.Message):
    __slots__ = ("consumer_id", "name", "disabled")
    CONSUMER_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DISABLED_FIELD_NUMBER: _ClassVar[int]
    consumer_id: str
    name: str
    disabled: bool
    def __init__(self, consumer_id: _Optional[str] = ..., name: _Optional[str] = ..., disabled: _Optional[bool] = ...) -> None: ...

class UpdateConsumerResponse(_message.Message):
    __slots__ = ("consumer",)
    CONSUMER_FIELD_NUMBER: _ClassVar[int]
    consumer: Consumer
    def __init__(self, consumer: _Optional[_Union[Consumer, _Mapping]] = ...) -> None: ...

class CreateAdminRequest(_message.Message):
    __slots__ = ("name", "tenant_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    tenant_id: str
    def __init__(self, name: _Optional[str] = ..., tenant_id: _Optional[str] = ...) -> None: ...

class CreateAdminResponse(_message.Message):
    __slots__ = ("admin",)
    ADMIN_FIELD_NUMBER: _ClassVar[int]
    admin: Admin
    def __init__(self, admin: _Optional[_Union[Admin, _Mapping]] = ...) -> None: ...

class CreateApiKeyRequest(_message.Message):
    __slots__ = ("consumer_id", "admin_id", "name", "expire_time")
    CONSUMER_ID_FIELD_NUMBER: _ClassVar[int]
    ADMIN_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    consumer_id: str
    admin_id: str
    name: str
    expire_time: _timestamp_pb2.Timestamp
    def __init__(self, consumer_id: _Optional[str] = ..., admin_id: _Optional[str] = ..., name: _Optional[str] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateApiKeyResponse(_message.Message):
    __slots__ = ("api_key", "secret")
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    api_key: ApiKey
    secret: str
    def __init__(self, api_key: _Optional[_Union[ApiKey, _Mapping]] = ..., secret: _Optional[str] = ...) -> None: ...

class ListApiKeysRequest(_message.Message):
    __slots__ = ("tenant_id", "consumer_id", "page_size", "page_token")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    consumer_id: str
    page_size: int
    page_token: str
    def __init__(self, tenant_id: _Optional[str] = ..., consumer_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListApiKeysResponse(_message.Message):
    __slots__ = ("api_keys", "next_page_token")
    API_KEYS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    api_keys: _containers.RepeatedCompositeFieldContainer[ApiKey]
    next_page_token: str
    def __init__(self, api_keys: _Optional[_Iterable[_Union[ApiKey, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class RevokeApiKeyRequest(_message.Message):
    __slots__ = ("key_id",)
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    def __init__(self, key_id: _Optional[str] = ...) -> None: ...

class RevokeApiKeyResponse(_message.Message):
    __slots__ = ("api_key",)
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    api_key: ApiKey
    def __init__(self, api_key: _Optional[_Union[ApiKey, _Mapping]] = ...) -> None: ...

class RotateApiKeyRequest(_message.Message):
    __slots__ = ("key_id", "grace_period", "expire_time")
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    GRACE_PERIOD_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    key_id: str
    grace_period: _duration_pb2.Duration
    expire_time: _timestamp_pb2.Timestamp
    def __init__(self, key_id: _Optional[str] = ..., grace_period: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RotateApiKeyResponse(_message.Message):
    __slots__ = ("api_key", "secret", "previous_api_key")
    API_KEY_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_API_KEY_FIELD_NUMBER: _ClassVar[int]
    api_key: ApiKey
    secret: str
    previous_api_key: ApiKey
    def __init__(self, api_key: _Optional[_Union[ApiKey, _Mapping]] = ..., secret: _Optional[str] = ..., previous_api_key: _Optional[_Union[ApiKey, _Mapping]] = ...) -> None: ...

class ListServicesRequest(_message.Message):
    __slots__ = ("tenant_id", "page_size", "page_token")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    page_size: int
    page_token: str
    def __init__(self, tenant_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListServicesResponse(_message.Message):
    __slots__ = ("services", "next_page_token")
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    services: _containers.RepeatedCompositeFieldContainer[Service]
    next_page_token: str
    def __init__(self, services: _Optional[_Iterable[_Union[Service, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpsertServiceRequest(_message.Message):
    __slots__ = ("tenant_id", "alias", "requires_approval")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    REQUIRES_APPROVAL_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    alias: str
    requires_approval: bool
    def __init__(self, tenant_id: _Optional[str] = ..., alias: _Optional[str] = ..., requires_approval: _Optional[bool] = ...) -> None: ...

class UpsertServiceResponse(_message.Message):
    __slots__ = ("service",)
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    service: Service
    def __init__(self, service: _Optional[_Union[Service, _Mapping]] = ...) -> None: ...

class RequestSubscriptionRequest(_message.Message):
    __slots__ = ("consumer_id", "alias")
    CONSUMER_ID_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    consumer_id: str
    alias: str
    def __init__(self, consumer_id: _Optional[str] = ..., alias: _Optional[str] = ...) -> None: ...

class RequestSubscriptionResponse(_message.Message):
    __slots__ = ("subscription",)
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    subscription: Subscription
    def __init__(self, subscription: _Optional[_Union[Subscription, _Mapping]] = ...) -> None: ...

class ApproveSubscriptionRequest(_message.Message):
    __slots__ = ("subscription_id", "note")
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    subscription_id: str
    note: str
    def __init__(self, subscription_id: _Optional[str] = ..., note: _Optional[str] = ...) -> None: ...

class ApproveSubscriptionResponse(_message.Message):
    __slots__ = ("subscription",)
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    subscription: Subscription
    def __init__(self, subscription: _Optional[_Union[Subscription, _Mapping]] = ...) -> None: ...

class RejectSubscriptionRequest(_message.Message):
    __slots__ = ("subscription_id", "note")
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    subscription_id: str
    note: str
    def __init__(self, subscription_id: _Optional[str] = ..., note: _Optional[str] = ...) -> None: ...

class RejectSubscriptionResponse(_message.Message):
    __slots__ = ("subscription",)
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    subscription: Subscription
    def __init__(self, subscription: _Optional[_Union[Subscription, _Mapping]] = ...) -> None: ...

class RevokeSubscriptionRequest(_message.Message):
    __slots__ = ("subscription_id", "note")
    SUBSCRIPTION_ID_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    subscription_id: str
    note: str
    def __init__(self, subscription_id: _Optional[str] = ..., note: _Optional[str] = ...) -> None: ...

class RevokeSubscriptionResponse(_message.Message):
    __slots__ = ("subscription",)
    SUBSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    subscription: Subscription
    def __init__(self, subscription: _Optional[_Union[Subscription, _Mapping]] = ...) -> None: ...

class ListSubscriptionsRequest(_message.Message):
    __slots__ = ("tenant_id", "consumer_id", "statuses", "page_size", "page_token")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_ID_FIELD_NUMBER: _ClassVar[int]
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    consumer_id: str
    statuses: _containers.RepeatedScalarFieldContainer[SubscriptionStatus]
    page_size: int
    page_token: str
    def __init__(self, tenant_id: _Optional[str] = ..., consumer_id: _Optional[str] = ..., statuses: _Optional[_Iterable[_Union[SubscriptionStatus, str]]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListSubscriptionsResponse(_message.Message):
    __slots__ = ("subscriptions", "next_page_token")
    SUBSCRIPTIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    subscriptions: _containers.RepeatedCompositeFieldContainer[Subscription]
    next_page_token: str
    def __init__(self, subscriptions: _Optional[_Iterable[_Union[Subscription, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class QuotaUsage(_message.Message):
    __slots__ = ("subject", "limit_name", "kind", "limit", "remaining", "reset_after")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    RESET_AFTER_FIELD_NUMBER: _ClassVar[int]
    subject: str
    limit_name: str
    kind: QuotaKind
    limit: float
    remaining: float
    reset_after: _duration_pb2.Duration
    def __init__(self, subject: _Optional[str] = ..., limit_name: _Optional[str] = ..., kind: _Optional[_Union[QuotaKind, str]] = ..., limit: _Optional[float] = ..., remaining: _Optional[float] = ..., reset_after: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class GetQuotaUsageRequest(_message.Message):
    __slots__ = ("scope", "id")
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    scope: QuotaScope
    id: str
    def __init__(self, scope: _Optional[_Union[QuotaScope, str]] = ..., id: _Optional[str] = ...) -> None: ...

class GetQuotaUsageResponse(_message.Message):
    __slots__ = ("usages",)
    USAGES_FIELD_NUMBER: _ClassVar[int]
    usages: _containers.RepeatedCompositeFieldContainer[QuotaUsage]
    def __init__(self, usages: _Optional[_Iterable[_Union[QuotaUsage, _Mapping]]] = ...) -> None: ...

class ResetQuotaUsageRequest(_message.Message):
    __slots__ = ("scope", "id")
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    scope: QuotaScope
    id: str
    def __init__(self, scope: _Optional[_Union[QuotaScope, str]] = ..., id: _Optional[str] = ...) -> None: ...

class ResetQuotaUsageResponse(_message.Message):
    __slots__ = ("usages",)
    USAGES_FIELD_NUMBER: _ClassVar[int]
    usages: _containers.RepeatedCompositeFieldContainer[QuotaUsage]
    def __init__(self, usages: _Optional[_Iterable[_Union[QuotaUsage, _Mapping]]] = ...) -> None: ...

class QuotaPolicy(_message.Message):
    __slots__ = ("requests_per_second", "requests_per_minute", "tokens_per_minute", "tokens_per_day", "spend_per_day", "spend_per_month", "concurrent")
    REQUESTS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_DAY_FIELD_NUMBER: _ClassVar[int]
    SPEND_PER_DAY_FIELD_NUMBER: _ClassVar[int]
    SPEND_PER_MONTH_FIELD_NUMBER: _ClassVar[int]
    CONCURRENT_FIELD_NUMBER: _ClassVar[int]
    requests_per_second: float
    requests_per_minute: float
    tokens_per_minute: float
    tokens_per_day: float
    spend_per_day: float
    spend_per_month: float
    concurrent: int
    def __init__(self, requests_per_second: _Optional[float] = ..., requests_per_minute: _Optional[float] = ..., tokens_per_minute: _Optional[float] = ..., tokens_per_day: _Optional[float] = ..., spend_per_day: _Optional[float] = ..., spend_per_month: _Optional[float] = ..., concurrent: _Optional[int] = ...) -> None: ...

class SetQuotaPolicyRequest(_message.Message):
    __slots__ = ("tenant_id", "consumer_id", "policy")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    consumer_id: str
    policy: QuotaPolicy
    def __init__(self, tenant_id: _Optional[str] = ..., consumer_id: _Optional[str] = ..., policy: _Optional[_Union[QuotaPolicy, _Mapping]] = ...) -> None: ...

class SetQuotaPolicyResponse(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: QuotaPolicy
    def __init__(self, policy: _Optional[_Union[QuotaPolicy, _Mapping]] = ...) -> None: ...

class GetQuotaPolicyRequest(_message.Message):
    __slots__ = ("tenant_id", "consumer_id")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    consumer_id: str
    def __init__(self, tenant_id: _Optional[str] = ..., consumer_id: _Optional[str] = ...) -> None: ...

class GetQuotaPolicyResponse(_message.Message):
    __slots__ = ("policy",)
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: QuotaPolicy
    def __init__(self, policy: _Optional[_Union[QuotaPolicy, _Mapping]] = ...) -> None: ...

class DeleteQuotaPolicyRequest(_message.Message):
    __slots__ = ("tenant_id", "consumer_id")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    consumer_id: str
    def __init__(self, tenant_id: _Optional[str] = ..., consumer_id: _Optional[str] = ...) -> None: ...

class DeleteQuotaPolicyResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CallLog(_message.Message):
    __slots__ = ("id", "request_id", "start_time", "method", "code", "reason", "tenant_id", "consumer_id", "key_id", "alias", "provider", "deployment", "vendor_model", "latency", "upstream_latency", "time_to_first_token", "input_tokens", "output_tokens", "cached_tokens", "cost", "cache_hit", "retries", "fallbacks", "client_address", "end_user", "request_body", "response_body")
    ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_ID_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    VENDOR_MODEL_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_LATENCY_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_FIRST_TOKEN_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    CACHE_HIT_FIELD_NUMBER: _ClassVar[int]
    RETRIES_FIELD_NUMBER: _ClassVar[int]
    FALLBACKS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    END_USER_FIELD_NUMBER: _ClassVar[int]
    REQUEST_BODY_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_BODY_FIELD_NUMBER: _ClassVar[int]
    id: int
    request_id: str
    start_time: _timestamp_pb2.Timestamp
    method: str
    code: str
    reason: str
    tenant_id: str
    consumer_id: str
    key_id: str
    alias: str
    provider: str
    deployment: str
    vendor_model: str
    latency: _duration_pb2.Duration
    upstream_latency: _duration_pb2.Duration
    time_to_first_token: _duration_pb2.Duration
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cost: float
    cache_hit: bool
    retries: int
    fallbacks: _containers.RepeatedScalarFieldContainer[str]
    client_address: str
    end_user: str
    request_body: str
    response_body: str
    def __init__(self, id: _Optional[int] = ..., request_id: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., method: _Optional[str] = ..., code: _Optional[str] = ..., reason: _Optional[str] = ..., tenant_id: _Optional[str] = ..., consumer_id: _Optional[str] = ..., key_id: _Optional[str] = ..., alias: _Optional[str] = ..., provider: _Optional[str] = ..., deployment: _Optional[str] = ..., vendor_model: _Optional[str] = ..., latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., upstream_latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., time_to_first_token: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., cached_tokens: _Optional[int] = ..., cost: _Optional[float] = ..., cache_hit: _Optional[bool] = ..., retries: _Optional[int] = ..., fallbacks: _Optional[_Iterable[str]] = ..., client_address: _Optional[str] = ..., end_user: _Optional[str] = ..., request_body: _Optional[str] = ..., response_body: _Optional[str] = ...) -> None: ...

class ListCallLogsRequest(_message.Message):
    __slots__ = ("start_time", "end_time", "tenant_id", "consumer_id", "alias", "codes", "errors_only", "min_latency", "request_id", "after_id", "page_size", "page_token")
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_ID_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    CODES_FIELD_NUMBER: _ClassVar[int]
    ERRORS_ONLY_FIELD_NUMBER: _ClassVar[int]
    MIN_LATENCY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    tenant_id: str
    consumer_id: str
    alias: str
    codes: _containers.RepeatedScalarFieldContainer[str]
    errors_only: bool
    min_latency: _duration_pb2.Duration
    request_id: str
    after_id: int
    page_size: int
    page_token: str
    def __init__(self, start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., tenant_id: _Optional[str] = ..., consumer_id: _Optional[str] = ..., alias: _Optional[str] = ..., codes: _Optional[_Iterable[str]] = ..., errors_only: _Optional[bool] = ..., min_latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., request_id: _Optional[str] = ..., after_id: _Optional[int] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListCallLogsResponse(_message.Message):
    __slots__ = ("call_logs", "next_page_token")
    CALL_LOGS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    call_logs: _containers.RepeatedCompositeFieldContainer[CallLog]
    next_page_token: str
    def __init__(self, call_logs: _Optional[_Iterable[_Union[CallLog, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetUsageStatsRequest(_message.Message):
    __slots__ = ("start_time", "end_time", "bucket", "group_by", "tenant_id", "consumer_id", "alias", "provider")
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_ID_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    bucket: UsageBucket
    group_by: UsageGroupBy
    tenant_id: str
    consumer_id: str
    alias: str
    provider: str
    def __init__(self, start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., bucket: _Optional[_Union[UsageBucket, str]] = ..., group_by: _Optional[_Union[UsageGroupBy, str]] = ..., tenant_id: _Optional[str] = ..., consumer_id: _Optional[str] = ..., alias: _Optional[str] = ..., provider: _Optional[str] = ...) -> None: ...

class UsageRow(_message.Message):
    __slots__ = ("bucket_start_time", "group", "calls", "errors", "error_rate", "input_tokens", "output_tokens", "cached_tokens", "cost", "cache_hits", "cache_hit_rate", "latency_mean", "latency_p50", "latency_p95", "latency_p99")
    BUCKET_START_TIME_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    CALLS_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    CACHE_HITS_FIELD_NUMBER: _ClassVar[int]
    CACHE_HIT_RATE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MEAN_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P50_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P95_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P99_FIELD_NUMBER: _ClassVar[int]
    bucket_start_time: _timestamp_pb2.Timestamp
    group: str
    calls: int
    errors: int
    error_rate: float
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cost: float
    cache_hits: int
    cache_hit_rate: float
    latency_mean: _duration_pb2.Duration
    latency_p50: _duration_pb2.Duration
    latency_p95: _duration_pb2.Duration
    latency_p99: _duration_pb2.Duration
    def __init__(self, bucket_start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., group: _Optional[str] = ..., calls: _Optional[int] = ..., errors: _Optional[int] = ..., error_rate: _Optional[float] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., cached_tokens: _Optional[int] = ..., cost: _Optional[float] = ..., cache_hits: _Optional[int] = ..., cache_hit_rate: _Optional[float] = ..., latency_mean: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., latency_p50: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., latency_p95: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., latency_p99: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class GetUsageStatsResponse(_message.Message):
    __slots__ = ("rows", "start_time", "end_time", "bucket", "group_by")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[UsageRow]
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    bucket: UsageBucket
    group_by: UsageGroupBy
    def __init__(self, rows: _Optional[_Iterable[_Union[UsageRow, _Mapping]]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., bucket: _Optional[_Union[UsageBucket, str]] = ..., group_by: _Optional[_Union[UsageGroupBy, str]] = ...) -> None: ...

class ListDeploymentsRequest(_message.Message):
    __slots__ = ("alias",)
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    alias: str
    def __init__(self, alias: _Optional[str] = ...) -> None: ...

class DeploymentStatus(_message.Message):
    __slots__ = ("alias", "deployment", "provider", "model", "weight", "priority", "state", "ejected_until", "in_flight", "latency_ewma", "error_rate", "consecutive_failures")
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    DEPLOYMENT_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    EJECTED_UNTIL_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    LATENCY_EWMA_FIELD_NUMBER: _ClassVar[int]
    ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    CONSECUTIVE_FAILURES_FIELD_NUMBER: _ClassVar[int]
    alias: str
    deployment: str
    provider: str
    model: str
    weight: int
    priority: int
    state: DeploymentState
    ejected_until: _timestamp_pb2.Timestamp
    in_flight: int
    latency_ewma: _duration_pb2.Duration
    error_rate: float
    consecutive_failures: int
    def __init__(self, alias: _Optional[str] = ..., deployment: _Optional[str] = ..., provider: _Optional[str] = ..., model: _Optional[str] = ..., weight: _Optional[int] = ..., priority: _Optional[int] = ..., state: _Optional[_Union[DeploymentState, str]] = ..., ejected_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., in_flight: _Optional[int] = ..., latency_ewma: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., error_rate: _Optional[float] = ..., consecutive_failures: _Optional[int] = ...) -> None: ...

class ListDeploymentsResponse(_message.Message):
    __slots__ = ("deployments",)
    DEPLOYMENTS_FIELD_NUMBER: _ClassVar[int]
    deployments: _containers.RepeatedCompositeFieldContainer[DeploymentStatus]
    def __init__(self, deployments: _Optional[_Iterable[_Union[DeploymentStatus, _Mapping]]] = ...) -> None: ...
