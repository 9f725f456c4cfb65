from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from aigc_saas.api.serializers import ErrorBodySerializer
from aigc_saas.usage.serializers import UsageReportSerializer
from aigc_saas.usage.services import daily_totals, generator_totals, parse_range


class Usage(APIView):
    """The caller's tenant's usage: daily totals per generator of the jobs that ended in the range (UTC days)."""

    required_scopes = {"GET": "read"}

    @extend_schema(
        parameters=[
            OpenApiParameter("since", str, description="First UTC day, YYYY-MM-DD (default: 29 days before `until`)."),
            OpenApiParameter("until", str, description="Last UTC day, YYYY-MM-DD, inclusive (default: today)."),
        ],
        responses={200: UsageReportSerializer, **{c: OpenApiResponse(ErrorBodySerializer) for c in (400, 401, 403)}},
    )
    def get(self, request: Request) -> Response:
        start, end = parse_range(request.query_params.get("since"), request.query_params.get("until"))
        days = daily_totals(start, end, tenant_id=request.user.tenant.pk)
        body = {"since": start, "until": end, "days": days, "totals": generator_totals(days)}
        return Response(UsageReportSerializer(body).data)
