"""Which attributes belong to which level of the patient/study/series/instance hierarchy.

Used at ingest to split an instance's attributes into the rows of each level and at query
time for the default return attributes of QIDO-RS (PS3.18 Tables 10.6.3-3 to 10.6.3-5).
Attributes not listed for patient, study or series are instance-level.
"""

from __future__ import annotations

from enum import StrEnum

from app.dicom.tags import tag, tags


class Level(StrEnum):
    """Query/Retrieve levels (PS3.4 C.6); values are the DIMSE QueryRetrieveLevel terms."""

    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    INSTANCE = "IMAGE"


# The levels from the top of the hierarchy down.
LEVELS: tuple[Level, ...] = (Level.PATIENT, Level.STUDY, Level.SERIES, Level.INSTANCE)


# The unique key of each level (PS3.4 C.6.1.1, C.6.2.1).
UNIQUE_KEYS: dict[Level, int] = {
    Level.PATIENT: tag("PatientID"),
    Level.STUDY: tag("StudyInstanceUID"),
    Level.SERIES: tag("SeriesInstanceUID"),
    Level.INSTANCE: tag("SOPInstanceUID"),
}


# Patient module (PS3.3 C.7.1.1) and the patient identity attributes of PS3.4 C.6.1.1.2.
PATIENT_TAGS: frozenset[int] = tags(
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "TypeOfPatientID",
    "IssuerOfPatientIDQualifiersSequence",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientBirthDateInAlternativeCalendar",
    "PatientAlternativeCalendar",
    "PatientSex",
    "QualityControlSubject",
    "StrainDescription",
    "OtherPatientNames",
    "OtherPatientIDsSequence",
    "PatientBirthName",
    "PatientAddress",
    "PatientMotherBirthName",
    "PatientTelephoneNumbers",
    "EthnicGroup",
    "PatientSpeciesDescription",
    "PatientSpeciesCodeSequence",
    "PatientBreedDescription",
    "PatientBreedCodeSequence",
    "ResponsiblePerson",
    "ResponsiblePersonRole",
    "ResponsibleOrganization",
    "PatientComments",
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "DeidentificationMethodCodeSequence",
)

# General Study and Patient Study modules (PS3.3 C.7.2.1, C.7.2.2).
STUDY_TAGS: frozenset[int] = tags(
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "IssuerOfAccessionNumberSequence",
    "ReferringPhysicianName",
    "ReferringPhysicianIdentificationSequence",
    "StudyDescription",
    "ProcedureCodeSequence",
    "PhysiciansOfRecord",
    "PhysiciansOfRecordIdentificationSequence",
    "NameOfPhysiciansReadingStudy",
    "PhysiciansReadingStudyIdentificationSequence",
    "AdmittingDiagnosesDescription",
    "AdmittingDiagnosesCodeSequence",
    "ReferencedStudySequence",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "MedicalAlerts",
    "Allergies",
    "Occupation",
    "SmokingStatus",
    "AdditionalPatientHistory",
    "PregnancyStatus",
    "PatientSexNeutered",
    "StudyID",
    "StudyInstanceUID",
    "RequestingPhysician",
    "RequestedProcedureDescription",
    "RequestedProcedureCodeSequence",
    "ReasonForPerformedProcedureCodeSequence",
)

# General Series, General Equipment, Frame of Reference and related series-level modules.
SERIES_TAGS: frozenset[int] = tags(
    "SeriesDate",
    "SeriesTime",
    "Modality",
    "Manufacturer",
    "InstitutionName",
    "InstitutionAddress",
    "StationName",
    "SeriesDescription",
    "SeriesDescriptionCodeSequence",
    "InstitutionalDepartmentName",
    "PerformingPhysicianName",
    "PerformingPhysicianIdentificationSequence",
    "OperatorsName",
    "OperatorIdentificationSequence",
    "ManufacturerModelName",
    "ReferencedPerformedProcedureStepSequence",
    "RelatedSeriesSequence",
    "BodyPartExamined",
    "DeviceSerialNumber",
    "SoftwareVersions",
    "ProtocolName",
    "PatientPosition",
    "SeriesInstanceUID",
    "SeriesNumber",
    "FrameOfReferenceUID",
    "Laterality",
    "PositionReferenceIndicator",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    "PerformedProcedureStepID",
    "PerformedProcedureStepDescription",
    "PerformedProtocolCodeSequence",
    "RequestAttributesSequence",
)

# Computed attributes, never read from an instance: the index maintains them.
MODALITIES_IN_STUDY = tag("ModalitiesInStudy")
NUMBER_OF_PATIENT_RELATED_STUDIES = tag("NumberOfPatientRelatedStudies")
NUMBER_OF_STUDY_RELATED_SERIES = tag("NumberOfStudyRelatedSeries")
NUMBER_OF_STUDY_RELATED_INSTANCES = tag("NumberOfStudyRelatedInstances")
NUMBER_OF_SERIES_RELATED_INSTANCES = tag("NumberOfSeriesRelatedInstances")
INSTANCE_AVAILABILITY = tag("InstanceAvailability")
RETRIEVE_URL = tag("RetrieveURL")
SPECIFIC_CHARACTER_SET = tag("SpecificCharacterSet")
TIMEZONE_OFFSET_FROM_UTC = tag("TimezoneOffsetFromUTC")

# Attributes copied into every level's stored attributes because they qualify the others.
SHARED_TAGS: frozenset[int] = frozenset({SPECIFIC_CHARACTER_SET, TIMEZONE_OFFSET_FROM_UTC})

# Default return attributes of QIDO-RS, PS3.18 Tables 10.6.3-3 (study), -4 (series), -5
# (instance). RetrieveURL is added by the web layer.
DEFAULT_RETURN: dict[Level, frozenset[int]] = {
    Level.PATIENT: frozenset(
        {
            SPECIFIC_CHARACTER_SET,
            NUMBER_OF_PATIENT_RELATED_STUDIES,
            *tags(
                "PatientName",
                "PatientID",
                "IssuerOfPatientID",
                "PatientBirthDate",
                "PatientSex",
            ),
        }
    ),
    Level.STUDY: frozenset(
        {
            SPECIFIC_CHARACTER_SET,
            INSTANCE_AVAILABILITY,
            MODALITIES_IN_STUDY,
            TIMEZONE_OFFSET_FROM_UTC,
            RETRIEVE_URL,
            NUMBER_OF_STUDY_RELATED_SERIES,
            NUMBER_OF_STUDY_RELATED_INSTANCES,
            *tags(
                "StudyDate",
                "StudyTime",
                "AccessionNumber",
                "ReferringPhysicianName",
                "PatientName",
                "PatientID",
                "PatientBirthDate",
                "PatientSex",
                "StudyInstanceUID",
                "StudyID",
            ),
        }
    ),
    Level.SERIES: frozenset(
        {
            SPECIFIC_CHARACTER_SET,
            TIMEZONE_OFFSET_FROM_UTC,
            RETRIEVE_URL,
            NUMBER_OF_SERIES_RELATED_INSTANCES,
            *tags(
                "Modality",
                "SeriesDescription",
                "SeriesInstanceUID",
                "SeriesNumber",
                "PerformedProcedureStepStartDate",
                "PerformedProcedureStepStartTime",
                "RequestAttributesSequence",
            ),
        }
    ),
    Level.INSTANCE: frozenset(
        {
            SPECIFIC_CHARACTER_SET,
            INSTANCE_AVAILABILITY,
            TIMEZONE_OFFSET_FROM_UTC,
            RETRIEVE_URL,
            *tags(
                "SOPClassUID",
                "SOPInstanceUID",
                "InstanceNumber",
                "Rows",
                "Columns",
                "BitsAllocated",
                "NumberOfFrames",
            ),
        }
    ),
}


def level_of(tag: int) -> Level:
    """The level an attribute belongs to (instance for everything not listed above)."""
    if tag in PATIENT_TAGS:
        return Level.PATIENT
    if tag in STUDY_TAGS or tag in (
        MODALITIES_IN_STUDY,
        NUMBER_OF_STUDY_RELATED_SERIES,
        NUMBER_OF_STUDY_RELATED_INSTANCES,
    ):
        return Level.STUDY
    if tag in SERIES_TAGS or tag == NUMBER_OF_SERIES_RELATED_INSTANCES:
        return Level.SERIES
    return Level.INSTANCE
